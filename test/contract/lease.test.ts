import { afterAll, beforeAll } from 'vitest';
import { dirCoordinator } from '../../src/lease/dir-coordinator.js';
import { memoryCoordinator } from '../../src/lease/memory-coordinator.js';
import { pgCoordinator } from '../../src/lease/pg-coordinator.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { useTempDirs } from '../helpers/temp-dir.js';
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

let postgres: TestPostgres;
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await postgres.stop();
});

runLeaseContract('postgres', () =>
  Promise.resolve({
    open: () => pgCoordinator(postgres.url),
    pass: untilCoordinatorPasses,
    cleanup: () => Promise.resolve(),
  }),
);
