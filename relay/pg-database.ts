import type pg from 'pg';

/**
 * What the Postgres relay and the Postgres lease backend share: transactions, and schema
 * creation that is safe when several daemons start against one database at once.
 */

/** Runs `work` in a transaction on one pooled connection; any throw rolls back. */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/**
 * Runs schema statements (`CREATE … IF NOT EXISTS`) in one transaction under a transaction-level
 * advisory lock. `IF NOT EXISTS` alone is not safe against a concurrent creator: both may find the
 * table missing and the second then fails on the catalog ("type … already exists"). With the
 * lock, a second daemon waits and then finds everything in place.
 */
export function createSchema(pool: pg.Pool, statements: readonly string[]): Promise<void> {
  return inTransaction(pool, async (client) => {
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('opsync schema'))`);
    for (const statement of statements) await client.query(statement);
  });
}
