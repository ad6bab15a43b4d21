import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    setupFiles: ['test/helpers/kill-leftover-daemons.ts'],
    pool: 'forks',
    maxWorkers: 2,
    // Generous bounds: the suite must pass on a loaded 2-core machine. No test asserts timing.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    // Daemons keep directory leases under the XDG state home (proposals/leases.md), and the CLI reads
    // a config file under the XDG config home (proposals/daemon.md §CLI): the tests' are temporary
    // folders, not the user's.
    env: { XDG_STATE_HOME: join(tmpdir(), 'opsync-test-state'), XDG_CONFIG_HOME: join(tmpdir(), 'opsync-test-config') },
  },
});
