import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { converged, until } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { leaseDirFor } from '../../src/daemon/lease-place.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { usePostgres } from '../helpers/use-postgres.js';

const tempDir = useTempDirs();

type Fence = {
  decision: { decision: string; op_id?: string; current_epoch?: number; holder?: string };
  may_dispatch: boolean;
  checked_at_ms: number;
};
type Lease = { agent_id: string; holder: string; epoch: number; granted_at_ms: number; expires_at_ms: number };

async function pair(extra: string[] = []) {
  const relay = await tempDir();
  const daemons = [await DaemonProcess.start(await tempDir(), relay, extra), await DaemonProcess.start(await tempDir(), relay, extra)];
  const [a, b] = await Promise.all(daemons.map((d) => d.connect()));
  const ids = await Promise.all([a!, b!].map(async (c) => (await c.call<{ device_id: string }>('sync.status')).device_id));
  return {
    a: a!,
    b: b!,
    idA: ids[0]!,
    idB: ids[1]!,
    close: async () => {
      await Promise.all([a!.close(), b!.close()]);
      await Promise.all(daemons.map((d) => d.stop()));
    },
  };
}

/** Resolves once `check` holds, re-checking after every sync.changed the client hears. */
async function untilTrue(client: RpcClient, check: () => Promise<boolean>): Promise<void> {
  await until([client], async () => ((await check()) ? true : undefined));
}

/** Waits until the lease coordinator no longer reports a live lease for `agent` (expiry by its clock). */
async function untilExpired(client: RpcClient, agent: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while ((await client.call<{ lease: Lease | null }>('lease.status', { agent_id: agent })).lease !== null) {
    if (Date.now() > deadline) throw new Error('the lease never expired');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('leases, intents and the fence across two daemons (directory backend)', () => {
  it('a committed run reaches the other device, and both fence it as already_committed — even the holder', async () => {
    const { a, b, idA, close } = await pair();
    try {
      const lease = await a.call<Lease>('lease.acquire', { agent_id: 'agent-1', ttl_ms: 60_000 });
      expect(lease).toMatchObject({ holder: idA, epoch: 1 });
      expect(await a.call<Fence>('sync.fence_check', { agent_id: 'agent-1', run_id: 'run-1', epoch: 1 })).toMatchObject({
        decision: { decision: 'proceed' },
        may_dispatch: true,
      });
      const committed = await a.call<{ recorded: boolean; op_id: string }>('sync.record_intent', {
        agent_id: 'agent-1',
        run_id: 'run-1',
        epoch: 1,
        status: 'committed',
      });
      expect(committed.recorded).toBe(true);

      await untilTrue(
        b,
        async () =>
          (await b.call<Fence>('sync.fence_check', { agent_id: 'agent-1', run_id: 'run-1', epoch: 1 })).decision.decision ===
          'already_committed',
      );
      for (const client of [a, b]) {
        expect(await client.call<Fence>('sync.fence_check', { agent_id: 'agent-1', run_id: 'run-1', epoch: 1 })).toMatchObject({
          decision: { decision: 'already_committed', op_id: committed.op_id },
          may_dispatch: false,
        });
      }
      expect(await b.call<Fence>('sync.fence_check', { agent_id: 'agent-1', run_id: 'run-2', epoch: 1 })).toMatchObject({
        decision: { decision: 'stale_epoch', current_epoch: 1, holder: idA },
        may_dispatch: false,
      });
      expect(await b.call('sync.record_intent', { agent_id: 'agent-1', run_id: 'run-1', epoch: 1, status: 'failed' })).toMatchObject({
        recorded: false,
        committed_op_id: committed.op_id,
      });
    } finally {
      await close();
    }
  });

  it('a lease taken on one device is visible from the other, held until released, then taken at epoch 2', async () => {
    const { a, b, idA, idB, close } = await pair();
    try {
      await a.call('lease.acquire', { agent_id: 'agent-x', ttl_ms: 60_000 });
      expect(await b.call('lease.status', { agent_id: 'agent-x' })).toMatchObject({ lease: { holder: idA, epoch: 1 } });
      await expect(b.call('lease.acquire', { agent_id: 'agent-x', ttl_ms: 60_000 })).rejects.toMatchObject({
        code: -32060,
        data: { code: 'lease_held', holder: idA, epoch: 1 },
      });
      expect(await a.call('lease.release', { agent_id: 'agent-x', epoch: 1 })).toMatchObject({ released: true });
      expect(await b.call('lease.acquire', { agent_id: 'agent-x', ttl_ms: 60_000 })).toMatchObject({ holder: idB, epoch: 2 });
      expect(await a.call<Fence>('sync.fence_check', { agent_id: 'agent-x', run_id: 'r', epoch: 1 })).toMatchObject({
        decision: { decision: 'stale_epoch', current_epoch: 2, holder: idB },
      });
    } finally {
      await close();
    }
  });

  it("a paused holder is fenced out after expiry, and its late commit does not replace the new holder's", async () => {
    const { a, b, idB, close } = await pair();
    try {
      await a.call('lease.acquire', { agent_id: 'agent-p', ttl_ms: 300 });
      expect((await a.call<Fence>('sync.fence_check', { agent_id: 'agent-p', run_id: 'run-p', epoch: 1 })).may_dispatch).toBe(true);
      await a.call('sync.record_intent', { agent_id: 'agent-p', run_id: 'run-p', epoch: 1, status: 'pending' });
      // A pauses: it stops renewing. Its lease expires by the coordinator's clock.
      await untilExpired(b, 'agent-p');
      expect(await b.call('lease.acquire', { agent_id: 'agent-p', ttl_ms: 60_000 })).toMatchObject({ holder: idB, epoch: 2 });
      expect((await b.call<Fence>('sync.fence_check', { agent_id: 'agent-p', run_id: 'run-p', epoch: 2 })).may_dispatch).toBe(true);
      const byB = await b.call<{ op_id: string }>('sync.record_intent', {
        agent_id: 'agent-p',
        run_id: 'run-p',
        epoch: 2,
        status: 'committed',
      });

      // A resumes: its fence at epoch 1 is refused, whether or not B's commit has reached it yet.
      const resumed = await a.call<Fence>('sync.fence_check', { agent_id: 'agent-p', run_id: 'run-p', epoch: 1 });
      expect(resumed.may_dispatch).toBe(false);
      expect(['stale_epoch', 'already_committed']).toContain(resumed.decision.decision);
      await a.call('sync.record_intent', { agent_id: 'agent-p', run_id: 'run-p', epoch: 1, status: 'committed' });

      const committedByB = async (client: RpcClient) => {
        const page = await client.call<{
          records: Array<{ key: string; op_id: string; device_id: string; payload: { status: string; epoch: number } }>;
        }>('sync.records', { surface: 'intent' });
        const run = page.records.find((r) => r.key === 'agent-p/run-p');
        return run?.op_id === byB.op_id && run.device_id === idB && run.payload.status === 'committed' && run.payload.epoch === 2;
      };
      await untilTrue(a, () => committedByB(a));
      await untilTrue(b, async () => {
        const [ha, hb] = await Promise.all([
          a.call<{ state_hash: string }>('sync.hash_state'),
          b.call<{ state_hash: string }>('sync.hash_state'),
        ]);
        return ha.state_hash === hb.state_hash;
      });
      expect(await committedByB(b)).toBe(true);
    } finally {
      await close();
    }
  });
});

describe('a lost lease folder (directory backend)', () => {
  it('does not start epochs over: the next grant lands above every epoch the synced ledger saw, and the old holder stays fenced', async () => {
    const relay = await tempDir();
    const dataB = await tempDir();
    const a = await DaemonProcess.start(await tempDir(), relay);
    let b = await DaemonProcess.start(dataB, relay);
    const ca = await a.connect();
    let cb = await b.connect();
    try {
      for (const epoch of [1, 2]) {
        expect(await ca.call<Lease>('lease.acquire', { agent_id: 'agent-z', ttl_ms: 600_000 })).toMatchObject({ epoch });
        await ca.call('sync.record_intent', { agent_id: 'agent-z', run_id: `run-${epoch}`, epoch, status: 'pending' });
        if (epoch === 1) await ca.call('lease.release', { agent_id: 'agent-z', epoch });
      }
      await converged([ca, cb]);

      // The lease folder is lost (deleted by hand, a share re-created empty) and B restarts on it.
      await cb.close();
      await b.stop();
      await rm(await leaseDirFor(relay, null, process.env), { recursive: true, force: true });
      b = await DaemonProcess.start(dataB, relay);
      cb = await b.connect();

      const taken = await cb.call<Lease>('lease.acquire', { agent_id: 'agent-z', ttl_ms: 60_000 });
      expect(taken.epoch).toBe(3);
      expect(await ca.call<Fence>('sync.fence_check', { agent_id: 'agent-z', run_id: 'run-3', epoch: 2 })).toMatchObject({
        decision: { decision: 'stale_epoch', current_epoch: 3 },
        may_dispatch: false,
      });
      expect(await cb.call<Fence>('sync.fence_check', { agent_id: 'agent-z', run_id: 'run-3', epoch: 3 })).toMatchObject({
        may_dispatch: true,
      });
    } finally {
      await Promise.all([ca.close(), cb.close()]);
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});

describe('leases with the Postgres backend', () => {
  const postgres = usePostgres();

  it('arbitrates between two daemons, and a lost database is a named error the fence never mistakes for authority', async () => {
    const { a, b, idA, idB, close } = await pair(['--lease-backend', 'postgres', '--pg-url', postgres().url]);
    try {
      expect(await a.call('lease.acquire', { agent_id: 'agent-pg', ttl_ms: 60_000 })).toMatchObject({ holder: idA, epoch: 1 });
      await expect(b.call('lease.acquire', { agent_id: 'agent-pg', ttl_ms: 60_000 })).rejects.toMatchObject({
        data: { code: 'lease_held' },
      });
      await a.call('lease.release', { agent_id: 'agent-pg', epoch: 1 });

      await postgres().pause();
      await expect(b.call('lease.acquire', { agent_id: 'agent-pg', ttl_ms: 60_000 })).rejects.toMatchObject({
        code: -32062,
        data: { code: 'lease_backend_unavailable' },
      });
      await expect(a.call('sync.fence_check', { agent_id: 'agent-pg', run_id: 'run-x', epoch: 1 })).rejects.toMatchObject({
        data: { code: 'lease_backend_unavailable' },
      });
      await postgres().resume();

      expect(await b.call('lease.acquire', { agent_id: 'agent-pg', ttl_ms: 60_000 })).toMatchObject({ holder: idB, epoch: 2 });
    } finally {
      await close();
    }
  });
});
