import type pg from 'pg';
import { createSchema } from '../../src/platform/pg-database.js';
import { OpsyncError } from '../../src/util/opsync-error.js';

/** The schema version this code reads and writes (proposals/relay.md §Postgres). */
const SCHEMA_VERSION = '1';

/** Creates the relay's tables when missing, and refuses a database of another schema version. */
export async function ensureSchema(pool: pg.Pool, location: string): Promise<void> {
  const statements = [
    `CREATE TABLE IF NOT EXISTS opsync_meta (key text PRIMARY KEY, value text NOT NULL)`,
    `INSERT INTO opsync_meta (key, value) VALUES ('schema_version', '${SCHEMA_VERSION}') ON CONFLICT DO NOTHING`,
    `CREATE TABLE IF NOT EXISTS opsync_devices (
      device_id text PRIMARY KEY, public_key text NOT NULL, added_ms bigint NOT NULL, last_seen_ms bigint NOT NULL,
      acked jsonb NOT NULL DEFAULT '{}', floor bigint NOT NULL DEFAULT 0)`,
    `CREATE TABLE IF NOT EXISTS opsync_ops (device_id text NOT NULL, seq bigint NOT NULL, op_id text NOT NULL, record text NOT NULL, PRIMARY KEY (device_id, seq))`,
    `CREATE TABLE IF NOT EXISTS opsync_checkpoints (checkpoint_hash text PRIMARY KEY, header jsonb NOT NULL, weight bigint NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS opsync_checkpoint_chunks (checkpoint_hash text NOT NULL, idx integer NOT NULL, chunk text NOT NULL, PRIMARY KEY (checkpoint_hash, idx))`,
  ];
  await createSchema(pool, statements);
  const { rows } = await pool.query<{ value: string }>(`SELECT value FROM opsync_meta WHERE key = 'schema_version'`);
  if (rows[0]?.value !== SCHEMA_VERSION) {
    throw new OpsyncError(
      'relay_invalid',
      `The Postgres relay ${location} has schema version ${rows[0]?.value ?? 'none'}; this opsync reads version ${SCHEMA_VERSION}.`,
      { relay: location },
    );
  }
}
