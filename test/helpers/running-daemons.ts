import type { ChildProcess } from 'node:child_process';

/**
 * Daemon processes the tests started and that have not exited. A test that fails or times out
 * before stopping its daemons would leave them running; `kill-leftover-daemons.ts` (a setup file)
 * kills what is left when each test file ends.
 */
export const running = new Set<ChildProcess>();

export function killLeftoverDaemons(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}
