import { existsSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dirCoordinator, KEPT_VERSIONS } from '../../src/lease/dir-coordinator.js';
import { memoryCoordinator } from '../../src/lease/memory-coordinator.js';
import { pgCoordinator } from '../../src/lease/pg-coordinator.js';
import { parseAgentId, parseDeviceId, type Epoch } from '../../src/oplog/ids.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { usePostgres } from '../helpers/use-postgres.js';
import { runLeaseContract, untilCoordinatorPasses } from './lease-contract.js';

const tempDir = useTempDirs();

runLeaseContract('memory', () => {
  let now = 1_700_000_000_000;
  const shared = memoryCoordinator(() => now);
  return Promise.resolve({
    open: () => Promise.resolve({ ...shared, close: () => Promise.resolve() }),
    pass: (_c, ms) => Promise.resolve(void (now += ms + 1)),
    cleanup: () => Promise.resolve(),
  });
});

runLeaseContract('directory', async () => {
  const root = await tempDir();
  return {
    open: () => Promise.resolve(dirCoordinator(root)),
    pass: untilCoordinatorPasses,
    cleanup: () => Promise.resolve(),
  };
});

const postgres = usePostgres();

runLeaseContract('postgres', () =>
  Promise.resolve({
    open: () => pgCoordinator(postgres().url),
    pass: untilCoordinatorPasses,
    cleanup: () => Promise.resolve(),
  }),
);

describe('directory leases: a writer paused while others run', () => {
  /** A coordinator whose first operation stops right before its link until `resume()`. */
  function pausedOnce(root: string) {
    let resume: () => void = () => {};
    let reachedPause: () => void = () => {};
    const paused = new Promise<void>((resolve) => (reachedPause = resolve));
    let first = true;
    const coordinator = dirCoordinator(root, {
      beforeLink: () => {
        if (!first) return Promise.resolve();
        first = false;
        reachedPause();
        return new Promise<void>((resolve) => (resume = resolve));
      },
    });
    return { coordinator, paused, resume: () => resume() };
  }

  const agent = parseAgentId('agent-1');
  const [p, q] = [parseDeviceId('device-p'), parseDeviceId('device-q')];

  /**
   * Device p starts an acquire and pauses right before its link; device q then acquires and
   * renews `renewals` times; p resumes. Returns p's outcome and the coordinator's final record.
   */
  async function pausedAcquire(renewals: number) {
    const root = await tempDir();
    const stale = pausedOnce(root);
    const other = dirCoordinator(root);
    const late = stale.coordinator.acquire(agent, p, 60_000);
    await stale.paused;
    const granted = await other.acquire(agent, q, 60_000);
    for (let i = 0; i < renewals; i++) await other.renew(agent, q, granted.epoch, 60_000);
    stale.resume();
    const outcome = await late.then(
      () => null,
      (error: unknown) => error,
    );
    return { outcome, granted, record: (await other.read(agent)).record };
  }

  it('never grants an epoch twice when its slot was pruned: the stale write is detected and retried', async () => {
    // Versions 2 … KEPT+1: version 1 is pruned while version 2 still stands.
    const { outcome, granted, record } = await pausedAcquire(KEPT_VERSIONS);
    expect(outcome).toMatchObject({ code: 'lease_held' });
    expect(record).toMatchObject({ holder: q, epoch: granted.epoch });
  });

  it('reports an unknown outcome, never a grant, when it was paused past the kept history', async () => {
    const { outcome, granted, record } = await pausedAcquire(KEPT_VERSIONS + 5);
    expect(outcome).toMatchObject({ code: 'lease_backend_unavailable', message: expect.stringMatching(/unknown/) as unknown });
    expect(record).toMatchObject({ holder: q, epoch: granted.epoch });
  });
});

describe('directory leases: damaged state', () => {
  it('refuses to grant while its folder is gone, rather than start every epoch over', async () => {
    const root = join(await tempDir(), 'leases');
    await mkdir(root);
    const agent = parseAgentId('agent-1');
    const device = parseDeviceId('device-p');
    const coordinator = dirCoordinator(root);
    expect((await coordinator.acquire(agent, device, 60_000)).epoch).toBe(1);
    await rm(root, { recursive: true, force: true });
    await expect(coordinator.acquire(parseAgentId('agent-2'), device, 60_000)).rejects.toMatchObject({
      code: 'lease_backend_unavailable',
      message: expect.stringContaining('is gone') as unknown,
    });
    await expect(coordinator.renew(agent, device, 1 as Epoch, 60_000)).rejects.toMatchObject({ code: 'lease_backend_unavailable' });
    expect(existsSync(root)).toBe(false);
    await coordinator.close();
  });

  it('names an unreadable newest state file instead of retrying it for ever', async () => {
    const root = await tempDir();
    const agent = parseAgentId('agent-1');
    const device = parseDeviceId('device-p');
    const coordinator = dirCoordinator(root);
    const lease = await coordinator.acquire(agent, device, 60_000);
    // The next version's slot holds a folder: it cannot be read as a state file.
    const folder = (await readdir(root))[0]!;
    await mkdir(join(root, folder, '000000000002.json'));
    await expect(coordinator.renew(agent, device, lease.epoch, 60_000)).rejects.toMatchObject({
      code: 'lease_backend_unavailable',
      message: expect.stringContaining('damaged') as unknown,
    });
    await coordinator.close();
  });
});
