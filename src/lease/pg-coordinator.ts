import pg from 'pg';
import type { AgentId, DeviceId, Epoch } from '../oplog/ids.js';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
import type { LeaseCoordinator } from './coordinator.js';
import type { LeaseRecord } from './lease-rules.js';
import { ruleCoordinator } from './rule-coordinator.js';
import { createSchema, inTransaction, maskedUrl, NOW_MS, schemaOnFirstUse } from '../platform/pg-database.js';

/**
 * Leases in Postgres (proposals/leases.md §Postgres): one row per agent, changed in a
 * transaction that holds the row lock (`SELECT … FOR UPDATE`) — linearizable across machines.
 * The database's clock decides expiry: every rule runs with `clock_timestamp()` read inside the
 * transaction. The schema is created on first use (a database out of reach at start is not an
 * error: every operation is refused until it is back). A lost connection or any database failure is
 * `lease_backend_unavailable`; nothing succeeds without a committed transaction.
 */
export async function pgCoordinator(url: string): Promise<LeaseCoordinator> {
  const pool = new pg.Pool({ connectionString: url, max: 8, connectionTimeoutMillis: 5_000 });
  pool.on('error', () => {
    // An idle client lost its connection; the next query reconnects or fails by name.
  });
  const schema = schemaOnFirstUse(() => ensureSchema(pool));
  // A database out of reach at start is not an error: leases are refused, by name, until it is back.
  await backend(url, schema.atStart);
  const run = <T>(operation: () => Promise<T>) =>
    backend(url, async () => {
      await schema.ready();
      return operation();
    });

  return ruleCoordinator(
    'postgres',
    (agent, step) =>
      run(() =>
        inTransaction(pool, async (client) => {
          await client.query('INSERT INTO opsync_leases (agent_id) VALUES ($1) ON CONFLICT DO NOTHING', [agent]);
          const row = await selectForUpdate(client, agent);
          const { write, result } = step(toRecord(agent, row), Number(row.now_ms));
          await client.query(
            'UPDATE opsync_leases SET holder = $2, epoch = $3, granted_at_ms = $4, expires_at_ms = $5 WHERE agent_id = $1',
            [agent, write.holder, write.epoch, write.granted_at_ms, write.expires_at_ms],
          );
          return result;
        }),
      ),
    (agent) =>
      run(async () => {
        const { rows } = await pool.query<Row>(
          `SELECT l.holder, l.epoch, l.granted_at_ms, l.expires_at_ms, ${NOW_MS} AS now_ms FROM (SELECT 1) AS one LEFT JOIN opsync_leases AS l ON l.agent_id = $1`,
          [agent],
        );
        const row = rows[0]!;
        return { record: row.epoch === null ? null : toRecord(agent, row), now_ms: Number(row.now_ms) };
      }),
    () => pool.end(),
  );
}

interface Row {
  holder: string | null;
  epoch: string | null;
  granted_at_ms: string | null;
  expires_at_ms: string | null;
  now_ms: string;
}

function ensureSchema(pool: pg.Pool): Promise<void> {
  return createSchema(pool, [
    `CREATE TABLE IF NOT EXISTS opsync_leases (
      agent_id text PRIMARY KEY,
      holder text,
      epoch bigint NOT NULL DEFAULT 0,
      granted_at_ms bigint NOT NULL DEFAULT 0,
      expires_at_ms bigint NOT NULL DEFAULT 0
    )`,
  ]);
}

async function selectForUpdate(client: pg.PoolClient, agent: AgentId): Promise<Row> {
  const { rows } = await client.query<Row>(
    `SELECT holder, epoch, granted_at_ms, expires_at_ms, ${NOW_MS} AS now_ms FROM opsync_leases WHERE agent_id = $1 FOR UPDATE`,
    [agent],
  );
  return rows[0]!;
}

/** A never-leased agent (epoch 0) has no record. */
function toRecord(agent: AgentId, row: Row): LeaseRecord | null {
  if (row.epoch === null || Number(row.epoch) === 0) return null;
  return {
    agent_id: agent,
    holder: row.holder as DeviceId | null,
    epoch: Number(row.epoch) as Epoch,
    granted_at_ms: Number(row.granted_at_ms),
    expires_at_ms: Number(row.expires_at_ms),
  };
}

/** Runs a database operation; a named failure passes through, any other is the backend's. */
async function backend<T>(url: string, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (isOpsyncError(error)) throw error;
    throw new OpsyncError(
      'lease_backend_unavailable',
      `The Postgres lease backend failed: ${(error as Error).message}. No lease decision was made.`,
      {
        backend: 'postgres',
        url: maskedUrl(url),
      },
    );
  }
}
