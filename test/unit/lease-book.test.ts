import { describe, expect, it } from 'vitest';
import { LeaseBook } from '../../src/lease/lease-book.js';
import { memoryCoordinator } from '../../src/lease/memory-coordinator.js';
import { parseAgentId, parseDeviceId } from '../../src/oplog/ids.js';

describe('the lease book', () => {
  it('counts the leases this device holds until released, lost or expired, and reads the holders of the agents asked about', async () => {
    let now = 1_000;
    const shared = memoryCoordinator(() => now);
    const [mine, theirs] = [new LeaseBook(shared), new LeaseBook(shared)];
    const [a, b] = [parseDeviceId('device-a'), parseDeviceId('device-b')];
    const [one, two] = [parseAgentId('agent-1'), parseAgentId('agent-2')];
    const first = await mine.acquire(one, a, 10_000);
    await mine.acquire(two, a, 1_000);
    expect(mine.heldCount(now)).toBe(2);
    expect(mine.heldCount(now + 1_000)).toBe(1);
    await mine.release(one, a, first.epoch);
    expect(mine.heldCount(now)).toBe(1);

    now += 2_000;
    const taken = await theirs.acquire(two, b, 10_000);
    // Read again, the lease this device held is gone: another epoch holds it.
    const read = await mine.read(two);
    expect(read.record).toMatchObject({ holder: b, epoch: taken.epoch });
    expect(mine.heldCount(now - 2_000)).toBe(0);
    const { records } = await mine.recent(10);
    expect(records.map((record) => [record.agent_id, record.holder])).toEqual([
      [two, b],
      [one, null],
    ]);
  });
});
