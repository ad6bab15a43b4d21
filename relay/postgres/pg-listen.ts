import type pg from 'pg';
import type { DeviceId } from '../../src/oplog/ids.js';
import type { Watch } from '../port/relay.js';

/** The channel a push or checkpoint is announced on; its payload is the writing device. */
export const CHANNEL = 'opsync_changed';

/**
 * LISTENs on a dedicated connection for other devices' writes (proposals/relay.md §Postgres). A
 * dropped connection triggers a change (something may have been missed) and is re-established after
 * a second, for as long as the watch is open; so is one that cannot be made at first (the database
 * is out of reach). `db` runs a database operation, naming its failures.
 */
export async function listenForChanges(
  pool: pg.Pool,
  self: DeviceId,
  onChange: () => void,
  db: <T>(operation: () => Promise<T>) => Promise<T>,
): Promise<Watch> {
  let closed = false;
  let client: pg.PoolClient | null = null;
  let retry: NodeJS.Timeout | null = null;
  const listen = async (): Promise<void> => {
    const connection = await db(() => pool.connect());
    connection.on('notification', (message) => {
      if (message.payload !== self) onChange();
    });
    connection.on('error', (error) => {
      connection.release(error);
      if (client === connection) client = null;
      onChange();
      if (!closed) again();
    });
    try {
      await db(() => connection.query(`LISTEN ${CHANNEL}`));
    } catch (error) {
      connection.release(true);
      throw error;
    }
    client = connection;
  };
  const again = (): void => {
    retry = setTimeout(() => {
      retry = null;
      if (!closed) listen().then(onChange, again);
    }, 1_000);
    retry.unref();
  };
  await listen().catch(again);
  return {
    close: async () => {
      closed = true;
      if (retry) clearTimeout(retry);
      const connection = client;
      client = null;
      if (connection) {
        await connection.query(`UNLISTEN ${CHANNEL}`).catch(() => undefined);
        connection.release();
      }
    },
  };
}
