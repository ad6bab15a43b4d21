import pg from 'pg';
import { parseDeviceId, type DeviceId } from '../../src/oplog/ids.js';
import { PostgresRelay } from '../../relay/postgres/postgres-relay.js';
import type { Relay } from '../../relay/port/relay.js';
import type { TestPostgres } from './postgres.js';
import { coreCrypto } from './test-device.js';
import { World } from './world.js';

/** The tables a Postgres relay keeps its devices, ops and checkpoints in. */
export const RELAY_TABLES = ['opsync_ops', 'opsync_devices', 'opsync_checkpoints', 'opsync_checkpoint_chunks'] as const;

/** Statements that back the relay's tables up as `<name>_<table>`: run them in one REPEATABLE READ transaction, one snapshot, as pg_dump reads. */
export function backupStatements(name: string): string[] {
  return RELAY_TABLES.flatMap((table) => [
    `DROP TABLE IF EXISTS ${name}_${table}`,
    `CREATE TABLE ${name}_${table} AS SELECT * FROM ${table}`,
  ]);
}

/** Statements that restore the relay's tables from the backup `name`, in one transaction. */
export function restoreStatements(name: string): string[] {
  return [`TRUNCATE ${RELAY_TABLES.join(', ')}`, ...RELAY_TABLES.map((table) => `INSERT INTO ${table} SELECT * FROM ${name}_${table}`)];
}

/** Runs `statements` in one transaction on a connection of its own; one that deadlocks with others' transactions is tried again. */
export async function transaction(url: string, statements: readonly string[], isolation = 'READ COMMITTED'): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  await client.connect();
  try {
    for (;;) {
      try {
        await client.query(`BEGIN ISOLATION LEVEL ${isolation}`);
        for (const statement of statements) await client.query(statement);
        await client.query('COMMIT');
        return;
      } catch (error) {
        await client.query('ROLLBACK');
        if ((error as { code?: string }).code !== '40P01') throw error;
      }
    }
  } finally {
    await client.end();
  }
}

let databases = 0;

/**
 * A `World` whose devices share a Postgres relay in a database of its own on `server`, with the
 * world's clock standing in for the database's. A backup is one snapshot of the relay's tables,
 * restored in one transaction under the running devices. `dispose` drops the database.
 */
export class PgRelayWorld extends World {
  private backups = 0;

  private constructor(
    private readonly server: TestPostgres,
    private readonly database: string,
    private readonly url: string,
    private readonly horizonMs: number | undefined,
  ) {
    super(horizonMs);
  }

  static async create(server: TestPostgres, horizonMs?: number): Promise<PgRelayWorld> {
    const database = `world_${process.pid}_${databases++}`;
    const world = new PgRelayWorld(server, database, await server.createDatabase(database), horizonMs);
    await (await world.connectRelay(parseDeviceId('layout'))).close();
    return world;
  }

  protected override connectRelay(device: DeviceId): Promise<Relay> {
    return PostgresRelay.open({
      url: this.url,
      self: device,
      crypto: coreCrypto,
      now: () => this.now,
      ...(this.horizonMs === undefined ? {} : { horizonMs: this.horizonMs }),
    });
  }

  override async snapshotRelay(): Promise<() => Promise<void>> {
    const backup = `backup_${this.backups++}`;
    await transaction(this.url, backupStatements(backup), 'REPEATABLE READ');
    return () => transaction(this.url, restoreStatements(backup));
  }

  override async dispose(): Promise<void> {
    await super.dispose();
    await this.server.dropDatabase(this.database);
  }
}
