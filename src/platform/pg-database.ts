import type pg from 'pg';

/**
 * What the Postgres relay and the Postgres lease backend share: transactions, schema creation
 * that is safe when several daemons start against one database at once, and the database's clock.
 */

/** The database's clock in milliseconds, read when the statement runs: one clock for every device. */
export const NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

/**
 * Runs `work` in a transaction on one pooled connection; any throw rolls back. A checked-out
 * client whose connection drops between queries emits 'error', which the pool no longer catches
 * once the client is out: unheard, it would end the process. It is heard here, and the client is
 * discarded instead of going back to the pool (the query in flight, if any, fails by itself).
 */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let lost: Error | undefined;
  const onError = (error: Error) => (lost = error);
  client.on('error', onError);
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.off('error', onError);
    client.release(lost);
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

/**
 * Connection-level failures: the server is down, starting, or out of reach (a host name that does
 * not resolve is usually a device offline, so it counts too). SQLSTATE 57P0x: shutting down or
 * starting up.
 */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ENOENT',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ECONNRESET',
  'EPIPE',
  '57P01',
  '57P02',
  '57P03',
]);

/** A connection URL fit for logs and messages: a password in its user part or in a `password` parameter is masked. */
export function maskedUrl(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@').replace(/([?&]password=)[^&#]*/gi, '$1***');
}

/**
 * Whether `error` says the database cannot be reached now — rather than that it refused this
 * device (credentials, a missing database, a foreign schema), which waiting does not mend.
 */
export function unreachable(error: unknown): boolean {
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && UNREACHABLE.has(code)) return true;
  return typeof message === 'string' && /timeout exceeded when trying to connect|Connection terminated/i.test(message);
}

/**
 * The schema, created on first use and again after a failed attempt. `atStart` tries it once: a
 * database that cannot be reached then is not an error (the daemon works from its journal until
 * it is back), one that refuses is.
 */
export function schemaOnFirstUse(create: () => Promise<void>): { ready: () => Promise<void>; atStart: () => Promise<void> } {
  let created: Promise<void> | null = null;
  const ready = () =>
    (created ??= create().catch((error: unknown) => {
      created = null;
      throw error;
    }));
  return {
    ready,
    atStart: () =>
      ready().catch((error: unknown) => {
        if (!unreachable(error)) throw error;
      }),
  };
}
