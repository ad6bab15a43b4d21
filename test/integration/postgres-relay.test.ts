import type { EventEmitter } from 'node:events';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { converged } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { inTransaction } from '../../src/platform/pg-database.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { usePostgres } from '../helpers/use-postgres.js';

const tempDir = useTempDirs();
const postgres = usePostgres();

describe('real daemons on a Postgres relay (several machines, one database)', () => {
  it('converge with no sync.pump call, share leases through the same database, and a third bootstraps from a checkpoint', async () => {
    const daemons = await Promise.all([
      DaemonProcess.start(await tempDir(), postgres().url),
      DaemonProcess.start(await tempDir(), postgres().url),
    ]);
    const [a, b] = await Promise.all(daemons.map((d) => d.connect()));
    let late: DaemonProcess | null = null;
    try {
      for (let i = 0; i < 20; i++) {
        await a!.call('sync.append', { surface: 'knowledge', payload: { id: `a${i}`, text: 'from a' } });
        await b!.call('sync.append', { surface: 'registry:tools', payload: { id: `t${i % 4}`, v: i } });
      }
      expect((await converged([a!, b!])).records).toBe(24);

      const status = await b!.call<{ relay: string; lease_backend: string }>('sync.status');
      expect(status).toMatchObject({ relay: expect.stringMatching(/^postgres/) as unknown, lease_backend: 'postgres' });
      const lease = await a!.call<{ epoch: number; holder: string }>('lease.acquire', { agent_id: 'agent-1', ttl_ms: 60_000 });
      expect(await b!.call('lease.status', { agent_id: 'agent-1' })).toMatchObject({ lease: { epoch: lease.epoch, holder: lease.holder } });

      // An explicit pump acks at once, so the stable frontier covers everything both devices hold.
      await Promise.all([a!.call('sync.pump'), b!.call('sync.pump')]);
      expect(await a!.call('sync.checkpoint')).toMatchObject({ published: true });
      late = await DaemonProcess.start(await tempDir(), postgres().url);
      const c = await late.connect();
      try {
        expect((await converged([a!, b!, c])).records).toBe(24);
        expect(await c.call('sync.status')).toMatchObject({ base_checkpoint: expect.any(String) as unknown });
      } finally {
        await c.close();
      }
    } finally {
      await Promise.all([a!.close(), b!.close()]);
      await Promise.all([...daemons, ...(late ? [late] : [])].map((d) => d.stop()));
    }
  });

  it('keeps syncing without a pump call after the database restarts (the watch reconnects)', async () => {
    const daemons = await Promise.all([
      DaemonProcess.start(await tempDir(), postgres().url),
      DaemonProcess.start(await tempDir(), postgres().url),
    ]);
    const [a, b] = await Promise.all(daemons.map((d) => d.connect()));
    try {
      await a!.call('sync.append', { surface: 'knowledge', payload: { id: 'before' } });
      const before = await converged([a!, b!]);
      await postgres().pause();
      await postgres().resume();
      // Only A writes: B hears of it through its re-established LISTEN, well before the 30 s
      // periodic pump that would otherwise be the only way.
      await a!.call('sync.append', { surface: 'knowledge', payload: { id: 'after' } });
      expect((await converged([a!, b!], 20_000)).records).toBe(before.records + 1);
    } finally {
      await Promise.all([a!.close(), b!.close()]);
      await Promise.all(daemons.map((d) => d.stop()));
    }
  });

  it("refills a database that lost every row from the devices' journals, with no restart", async () => {
    const url = await postgres().createDatabase(`reset_${process.pid}`);
    const daemons = await Promise.all([DaemonProcess.start(await tempDir(), url), DaemonProcess.start(await tempDir(), url)]);
    const [a, b] = await Promise.all(daemons.map((d) => d.connect()));
    let late: DaemonProcess | null = null;
    try {
      for (let i = 0; i < 3; i++) await a!.call('sync.append', { surface: 'knowledge', payload: { id: `a${i}` } });
      for (let i = 0; i < 2; i++) await b!.call('sync.append', { surface: 'knowledge', payload: { id: `b${i}` } });
      expect((await converged([a!, b!])).records).toBe(5);

      // Restored empty, or emptied by mistake: the relay forgets both devices and every op.
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query('TRUNCATE opsync_ops, opsync_devices');
      await client.end();

      await a!.call('sync.append', { surface: 'knowledge', payload: { id: 'after' } });
      await a!.call('sync.pump');
      await b!.call('sync.pump');
      await b!.call('sync.pump');
      expect((await converged([a!, b!])).records).toBe(6);
      // A device that starts now sees only what the relay holds: everything came back.
      late = await DaemonProcess.start(await tempDir(), url);
      const c = await late.connect();
      try {
        expect((await converged([a!, b!, c])).records).toBe(6);
      } finally {
        await c.close();
      }
    } finally {
      await Promise.all([a!.close(), b!.close()]);
      await Promise.all([...daemons, ...(late ? [late] : [])].map((d) => d.stop()));
    }
  });

  it('starts a daemon while the database is down: it takes appends, and syncs them with no pump call once the database is back', async () => {
    const running = await DaemonProcess.start(await tempDir(), postgres().url);
    const a = await running.connect();
    let late: DaemonProcess | null = null;
    try {
      await a.call('sync.append', { surface: 'knowledge', payload: { id: 'from-a' } });
      await a.call('sync.pump');
      await postgres().pause();
      try {
        // Both the relay and the Postgres lease backend are out of reach: the daemon starts anyway.
        late = await DaemonProcess.start(await tempDir(), postgres().url);
        const offline = await late.connect();
        try {
          await offline.call('sync.append', { surface: 'knowledge', payload: { id: 'offline' } });
          expect((await offline.call<{ last_error: string | null }>('sync.status')).last_error).toContain('Postgres relay');
          await expect(offline.call('lease.acquire', { agent_id: 'agent-off', ttl_ms: 60_000 })).rejects.toMatchObject({
            data: { code: 'lease_backend_unavailable' },
          });
        } finally {
          await offline.close();
        }
      } finally {
        await postgres().resume();
      }
      const c = await late.connect();
      try {
        const synced = await converged([a, c]);
        expect(synced.records).toBeGreaterThanOrEqual(2);
        const records = await a.call<{ records: Array<{ key: string }> }>('sync.records', { surface: 'knowledge' });
        expect(records.records.map((r) => r.key)).toEqual(expect.arrayContaining(['from-a', 'offline']));
        expect(await c.call('lease.acquire', { agent_id: 'agent-off', ttl_ms: 60_000 })).toMatchObject({ epoch: 1 });
      } finally {
        await c.close();
      }
    } finally {
      await a.close();
      await Promise.all([running, ...(late ? [late] : [])].map((d) => d.stop()));
    }
  });

  it('refuses to start against a database that refuses this device, saying why', async () => {
    const missing = postgres().url.replace('/postgres?', '/no_such_database?');
    await expect(DaemonProcess.start(await tempDir(), missing)).rejects.toThrow(/no_such_database.*does not exist/);
  });

  it('outlives a connection dropped while a transaction waits between queries: the transaction fails by itself', async () => {
    const pool = new pg.Pool({ connectionString: postgres().url });
    pool.on('error', () => {});
    const admin = new pg.Client({ connectionString: postgres().url });
    await admin.connect();
    try {
      let proceed!: () => void;
      const waiting = new Promise<void>((resolve) => (proceed = resolve));
      let checkedOut!: (client: pg.PoolClient) => void;
      const inside = new Promise<pg.PoolClient>((resolve) => (checkedOut = resolve));
      const transaction = inTransaction(pool, async (client) => {
        checkedOut(client);
        await waiting;
        await client.query('SELECT 1');
      });
      const client = await inside;
      // The server ends this connection while the client sits idle between two queries of its
      // transaction: pg then emits 'error' on the client, which ends the process if nobody hears it.
      const ended = new Promise((resolve) => (client as unknown as { connection: EventEmitter }).connection.once('end', resolve));
      await admin.query('SELECT pg_terminate_backend($1)', [(client as unknown as { processID: number }).processID]);
      await ended;
      proceed();
      await expect(transaction).rejects.toThrow();
      expect(await pool.query('SELECT 2 AS two')).toMatchObject({ rows: [{ two: 2 }] });
    } finally {
      await admin.end();
      await pool.end();
    }
  });
});
