import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { converged } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { usePostgres } from '../helpers/use-postgres.js';

const tempDir = useTempDirs();
const postgres = usePostgres();

describe('real daemons on a Postgres relay (several machines, one database)', () => {
  it('converge with no sync.pump call, share leases through the same database, and a third bootstraps from a checkpoint', async () => {
    const daemons = await Promise.all([DaemonProcess.start(await tempDir(), postgres().url), DaemonProcess.start(await tempDir(), postgres().url)]);
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
    const daemons = await Promise.all([DaemonProcess.start(await tempDir(), postgres().url), DaemonProcess.start(await tempDir(), postgres().url)]);
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

  it('refills a database that lost every row from the devices\' journals, with no restart', async () => {
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
});
