import type { LeaseCoordinator } from './coordinator.js';
import type { LeaseRecord } from './lease-rules.js';
import { ruleCoordinator } from './rule-coordinator.js';

/** Leases in memory, for tests and single-process use; the clock is injected. */
export function memoryCoordinator(now: () => number = Date.now): LeaseCoordinator {
  const records = new Map<string, LeaseRecord>();
  return ruleCoordinator(
    'memory',
    async (agent, step) => {
      await Promise.resolve();
      const { write, result } = step(records.get(agent) ?? null, now());
      records.set(agent, write);
      return result;
    },
    async (agent) => {
      await Promise.resolve();
      return { record: records.get(agent) ?? null, now_ms: now() };
    },
    () => Promise.resolve(),
  );
}
