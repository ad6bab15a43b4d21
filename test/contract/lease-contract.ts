import { describe, expect, it } from 'vitest';
import type { LeaseCoordinator } from '../../src/lease/coordinator.js';
import type { AgentId, DeviceId, Epoch } from '../../src/oplog/ids.js';

/** An epoch as a test names it. */
const epoch = (n: number): Epoch => n as Epoch;

export interface LeaseHarness {
  /** A coordinator on the harness's one backing store (a second call: another daemon's view). */
  open(): Promise<LeaseCoordinator>;
  /** Moves time past `ms` on the coordinator's clock (advances a fake clock, or waits for the real one). */
  pass(coordinator: LeaseCoordinator, ms: number): Promise<void>;
  cleanup(): Promise<void>;
}

const A = 'device-a' as DeviceId;
const B = 'device-b' as DeviceId;
let agents = 0;
const agent = () => `agent-${process.pid}-${agents++}` as AgentId;

/** The coordinator port's guarantees (proposals/leases.md §Coordinators and why each is linearizable), run against every backend. */
export function runLeaseContract(name: string, setup: () => Promise<LeaseHarness>): void {
  describe(`lease contract: ${name}`, () => {
    async function withCoordinator(test: (c: LeaseCoordinator, h: LeaseHarness) => Promise<void>): Promise<void> {
      const harness = await setup();
      const coordinator = await harness.open();
      try {
        await test(coordinator, harness);
      } finally {
        await coordinator.close();
        await harness.cleanup();
      }
    }

    it('grants epoch 1 to the first acquirer, with an expiry on the coordinator clock', () =>
      withCoordinator(async (c) => {
        const id = agent();
        const lease = await c.acquire(id, A, 30_000);
        expect(lease).toMatchObject({ agent_id: id, holder: A, epoch: 1 });
        expect(lease.expires_at_ms - lease.granted_at_ms).toBe(30_000);
        expect(await c.read(id)).toMatchObject({ record: { holder: A, epoch: 1 } });
      }));

    it('refuses to acquire a held lease — also to its holder, which must renew — naming holder, epoch and expiry', () =>
      withCoordinator(async (c) => {
        const id = agent();
        const lease = await c.acquire(id, A, 30_000);
        await expect(c.acquire(id, B, 30_000)).rejects.toMatchObject({
          code: 'lease_held',
          data: { holder: A, epoch: 1, expires_at_ms: lease.expires_at_ms },
        });
        await expect(c.acquire(id, A, 30_000)).rejects.toMatchObject({ code: 'lease_held', data: { holder: A, epoch: 1 } });
      }));

    it('renews for the holder at its epoch, and refuses a non-holder or a stale epoch as lost', () =>
      withCoordinator(async (c) => {
        const id = agent();
        const lease = await c.acquire(id, A, 30_000);
        const renewed = await c.renew(id, A, epoch(1), 60_000);
        expect(renewed.epoch).toBe(1);
        expect(renewed.expires_at_ms).toBeGreaterThan(lease.expires_at_ms);
        await expect(c.renew(id, B, epoch(1), 60_000)).rejects.toMatchObject({
          code: 'lease_lost',
          data: { claimed_epoch: 1, current_epoch: 1, holder: A },
        });
        await expect(c.renew(id, A, epoch(7), 60_000)).rejects.toMatchObject({
          code: 'lease_lost',
          data: { claimed_epoch: 7, current_epoch: 1 },
        });
      }));

    it('after a release, the next acquirer gets the next epoch; a stranger cannot release', () =>
      withCoordinator(async (c) => {
        const id = agent();
        await c.acquire(id, A, 30_000);
        await expect(c.release(id, B, epoch(1))).rejects.toMatchObject({ code: 'lease_lost' });
        expect(await c.release(id, A, epoch(1))).toMatchObject({ released_at_ms: expect.any(Number) as unknown });
        await expect(c.renew(id, A, epoch(1), 30_000)).rejects.toMatchObject({
          code: 'lease_lost',
          data: { current_epoch: 1, holder: null },
        });
        expect(await c.acquire(id, B, 30_000)).toMatchObject({ holder: B, epoch: 2 });
      }));

    it("lets another device take an expired lease at epoch + 1; the old holder's renew then fails naming the current epoch", () =>
      withCoordinator(async (c, h) => {
        const id = agent();
        await c.acquire(id, A, 200);
        await expect(c.acquire(id, B, 30_000)).rejects.toMatchObject({ code: 'lease_held' });
        await h.pass(c, 200);
        expect(await c.acquire(id, B, 30_000)).toMatchObject({ holder: B, epoch: 2 });
        await expect(c.renew(id, A, epoch(1), 30_000)).rejects.toMatchObject({
          code: 'lease_lost',
          data: { claimed_epoch: 1, current_epoch: 2, holder: B },
        });
      }));

    it('never reuses or lowers an epoch, across coordinators on the same store', () =>
      withCoordinator(async (c, h) => {
        const id = agent();
        const epochs: number[] = [];
        for (let round = 0; round < 5; round++) {
          const holder = round % 2 ? A : B;
          const lease = await c.acquire(id, holder, 30_000);
          epochs.push(lease.epoch);
          await c.release(id, holder, lease.epoch);
        }
        const other = await h.open();
        try {
          epochs.push((await other.acquire(id, A, 30_000)).epoch);
        } finally {
          await other.close();
        }
        expect(epochs).toEqual([1, 2, 3, 4, 5, 6]);
      }));

    it("mints above the ledger's floor when it exceeds the stored epoch, and above the stored epoch otherwise", () =>
      withCoordinator(async (c) => {
        const id = agent();
        // A store that lost the agent's record, while the synced ledger saw epoch 7.
        const first = await c.acquire(id, A, 30_000, epoch(7));
        expect(first.epoch).toBe(8);
        await c.release(id, A, epoch(8));
        expect((await c.acquire(id, B, 30_000, epoch(3))).epoch).toBe(9);
        expect(await c.read(id)).toMatchObject({ record: { holder: B, epoch: 9 } });
      }));

    it('refuses, naming the epoch, once the floor is the largest safe integer', () =>
      withCoordinator(async (c) => {
        const id = agent();
        await expect(c.acquire(id, A, 30_000, epoch(Number.MAX_SAFE_INTEGER))).rejects.toMatchObject({
          code: 'lease_epochs_exhausted',
          data: { epoch: Number.MAX_SAFE_INTEGER },
        });
        expect((await c.read(id)).record).toBeNull();
      }));

    it('answers null for an agent never leased', () =>
      withCoordinator(async (c) => {
        const read = await c.read(agent());
        expect(read.record).toBeNull();
        expect(read.now_ms).toBeGreaterThan(0);
      }));

    it('grants one of many concurrent acquires, from coordinators on the same store', () =>
      withCoordinator(async (c, h) => {
        const id = agent();
        const others = await Promise.all([h.open(), h.open()]);
        try {
          const devices = Array.from({ length: 12 }, (_, i) => `device-${i}` as DeviceId);
          const results = await Promise.allSettled(devices.map((d, i) => [c, ...others][i % 3]!.acquire(id, d, 30_000)));
          const granted = results.filter((r) => r.status === 'fulfilled');
          expect(granted).toHaveLength(1);
          expect(
            results
              .filter((r) => r.status === 'rejected')
              .every((r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'lease_held'),
          ).toBe(true);
        } finally {
          await Promise.all(others.map((o) => o.close()));
        }
      }));
  });
}

/** Waits until the coordinator's own clock has passed `ms` from now (real-clock backends). */
export async function untilCoordinatorPasses(c: LeaseCoordinator, ms: number): Promise<void> {
  const target = (await c.read('clock-probe' as AgentId)).now_ms + ms;
  const deadline = Date.now() + 60_000;
  while ((await c.read('clock-probe' as AgentId)).now_ms <= target) {
    if (Date.now() > deadline) throw new Error('the coordinator clock did not advance');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
