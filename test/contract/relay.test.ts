import { afterAll, beforeAll } from 'vitest';
import { MemoryRelayStore } from '../../relay/memory-relay.js';
import { PostgresRelay } from '../../relay/postgres-relay.js';
import type { Relay } from '../../relay/relay.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { DirectoryRelay } from '../../relay/directory-relay.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { coreCrypto } from '../helpers/test-device.js';
import { runRelayContract } from './relay-contract.js';

const tempDir = useTempDirs();

runRelayContract('memory', () => {
  let now = 1_700_000_000_000;
  const store = new MemoryRelayStore(coreCrypto, () => now);
  return Promise.resolve({
    connect: (device) => Promise.resolve(store.connect(device)),
    advance: (ms) => {
      now += ms;
    },
  });
});

runRelayContract('directory', async () => {
  let now = 1_700_000_000_000;
  const root = await tempDir();
  return {
    connect: (self) => DirectoryRelay.open({ root, self, crypto: coreCrypto, now: () => now }),
    advance: (ms) => {
      now += ms;
    },
  };
});

let postgres: TestPostgres;
const opened: Relay[] = [];
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await Promise.all(opened.map((relay) => relay.close()));
  await postgres.stop();
});

let database = 0;
runRelayContract('postgres', async () => {
  let now = 1_700_000_000_000;
  // A fresh database per test, so each starts from an empty relay.
  const name = `relay_${process.pid}_${database++}`;
  const admin = await PostgresRelay.open({ url: postgres.url, self: 'admin' as never, crypto: coreCrypto });
  opened.push(admin);
  await (admin as unknown as { pool: { query(sql: string): Promise<unknown> } }).pool.query(`CREATE DATABASE ${name}`);
  const url = postgres.url.replace('/postgres?', `/${name}?`);
  return {
    connect: async (self) => {
      const relay = await PostgresRelay.open({ url, self, crypto: coreCrypto, now: () => now });
      opened.push(relay);
      return relay;
    },
    advance: (ms) => {
      now += ms;
    },
  };
});
