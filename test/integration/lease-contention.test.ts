import { describe, expect, it } from 'vitest';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { seededRandom, testSeed } from '../helpers/seeded.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { usePostgres } from '../helpers/use-postgres.js';

const tempDir = useTempDirs();
const AGENTS = ['agent-0', 'agent-1', 'agent-2'];
const DURATION_MS = Number(process.env.OPSYNC_CONTENTION_MS ?? 2_500);

type Event =
  | { kind: 'grant' | 'renew'; agent: string; device: string; epoch: number; at: number; expires: number }
  | { kind: 'release'; agent: string; device: string; epoch: number; at: number }
  | { kind: 'proceed'; agent: string; device: string; epoch: number; at: number };

/**
 * Four clients on two daemons loop acquire / renew / release / let-expire-and-steal / fence on
 * three agents for a bounded time; the history (in the coordinator's time) must show a single
 * holder at every instant and the fence never letting a device through at a stale epoch.
 */
async function contend(extra: string[]): Promise<Event[]> {
  const relay = await tempDir();
  const daemons = [await DaemonProcess.start(await tempDir(), relay, extra), await DaemonProcess.start(await tempDir(), relay, extra)];
  const clients: Array<{ client: RpcClient; device: string }> = [];
  for (const daemon of daemons) {
    for (let i = 0; i < 2; i++) {
      const client = await daemon.connect();
      clients.push({ client, device: (await client.call<{ device_id: string }>('sync.status')).device_id });
    }
  }
  const seed = testSeed();
  const events: Event[] = [];
  const deadline = Date.now() + DURATION_MS;
  try {
    await Promise.all(
      clients.map(async ({ client, device }, n) => {
        const random = seededRandom(seed + n);
        const held = new Map<string, number>();
        while (Date.now() < deadline) {
          const agent = AGENTS[Math.floor(random() * AGENTS.length)]!;
          const epoch = held.get(agent);
          const roll = random();
          try {
            if (epoch === undefined) {
              const lease = await client.call<{ epoch: number; granted_at_ms: number; expires_at_ms: number }>('lease.acquire', {
                agent_id: agent,
                ttl_ms: 100 + Math.floor(random() * 200),
              });
              held.set(agent, lease.epoch);
              events.push({ kind: 'grant', agent, device, epoch: lease.epoch, at: lease.granted_at_ms, expires: lease.expires_at_ms });
            } else if (roll < 0.35) {
              const lease = await client.call<{ granted_at_ms: number; expires_at_ms: number }>('lease.renew', {
                agent_id: agent,
                epoch,
                ttl_ms: 100 + Math.floor(random() * 200),
              });
              events.push({ kind: 'renew', agent, device, epoch, at: lease.granted_at_ms, expires: lease.expires_at_ms });
            } else if (roll < 0.5) {
              const { released_at_ms } = await client.call<{ released_at_ms: number }>('lease.release', { agent_id: agent, epoch });
              held.delete(agent);
              events.push({ kind: 'release', agent, device, epoch, at: released_at_ms });
            } else if (roll < 0.9) {
              const fence = await client.call<{ may_dispatch: boolean; checked_at_ms: number }>('sync.fence_check', {
                agent_id: agent,
                run_id: `run-${n}-${events.length}`,
                epoch,
              });
              if (fence.may_dispatch) events.push({ kind: 'proceed', agent, device, epoch, at: fence.checked_at_ms });
            } else {
              held.delete(agent);
            }
          } catch (error) {
            const code = (error as { data?: { code?: string } }).data?.code;
            if (code !== 'lease_held' && code !== 'lease_lost') throw error;
            if (code === 'lease_lost') held.delete(agent);
          }
        }
      }),
    );
  } finally {
    await Promise.all(clients.map(({ client }) => client.close()));
    await Promise.all(daemons.map((d) => d.stop()));
  }
  return events;
}

function checkHistory(events: Event[]): { grants: number; proceeds: number } {
  let grants = 0;
  let proceeds = 0;
  for (const agent of AGENTS) {
    const mine = events.filter((e) => e.agent === agent);
    const granted = mine.filter((e) => e.kind === 'grant').sort((x, y) => x.at - y.at);
    grants += granted.length;
    const epochs = granted.map((g) => g.epoch);
    expect(new Set(epochs).size, `${agent}: an epoch was granted twice`).toBe(epochs.length);
    expect(epochs, `${agent}: epochs in grant order`).toEqual([...epochs].sort((x, y) => x - y));
    /** [start, end): a lease is live while now < expiry; a release in the same millisecond as a fence may follow it. */
    const interval = new Map<number, { device: string; start: number; end: number; released: boolean }>();
    for (const grant of granted) {
      // A renewal sets a new expiry (now + ttl, which may be sooner): the last one counts.
      const renewals = mine.filter((e) => (e.kind === 'renew' || e.kind === 'grant') && e.epoch === grant.epoch) as Array<{
        at: number;
        expires: number;
      }>;
      const last = renewals.reduce((a, b) => (b.at >= a.at ? b : a));
      const release = mine.find((e) => e.kind === 'release' && e.epoch === grant.epoch);
      const released = release !== undefined && release.at < last.expires;
      interval.set(grant.epoch, { device: grant.device, start: grant.at, end: released ? release.at : last.expires, released });
    }
    for (let i = 1; i < granted.length; i++) {
      const before = interval.get(granted[i - 1]!.epoch)!;
      const after = interval.get(granted[i]!.epoch)!;
      expect(after.start, `${agent}: epoch ${granted[i]!.epoch} began before epoch ${granted[i - 1]!.epoch} ended`).toBeGreaterThanOrEqual(
        before.end,
      );
    }
    for (const proceed of mine.filter((e) => e.kind === 'proceed')) {
      proceeds++;
      const lease = interval.get(proceed.epoch);
      expect(lease, `${agent}: proceed at an epoch never granted`).toBeDefined();
      expect(lease!.device, `${agent}: proceed for a device that did not hold epoch ${proceed.epoch}`).toBe(proceed.device);
      expect(proceed.at).toBeGreaterThanOrEqual(lease!.start);
      if (lease!.released)
        expect(proceed.at, `${agent}: proceed after epoch ${proceed.epoch} was released`).toBeLessThanOrEqual(lease!.end);
      else expect(proceed.at, `${agent}: proceed after epoch ${proceed.epoch} expired`).toBeLessThan(lease!.end);
    }
  }
  return { grants, proceeds };
}

describe('lease contention across two daemons', () => {
  it('directory backend: one holder at a time, increasing epochs, no stale proceed', async () => {
    const { grants, proceeds } = checkHistory(await contend([]));
    expect(grants).toBeGreaterThan(AGENTS.length);
    expect(proceeds).toBeGreaterThan(0);
  });

  describe('postgres backend', () => {
    const postgres = usePostgres();

    it('one holder at a time, increasing epochs, no stale proceed', async () => {
      const { grants, proceeds } = checkHistory(await contend(['--lease-backend', 'postgres', '--pg-url', postgres().url]));
      expect(grants).toBeGreaterThan(AGENTS.length);
      expect(proceeds).toBeGreaterThan(0);
    });
  });
});
