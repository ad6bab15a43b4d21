import type { AgentId, DeviceId, Epoch } from '../oplog/ids.js';
import type { LeaseCoordinator } from './coordinator.js';
import { acquire, release, renew, toLease, type LeaseRecord } from './lease-rules.js';

/**
 * Builds a coordinator from one atomic primitive: `transact` reads an agent's record and the
 * coordinator's time, applies `step`, and stores what it returns — or nothing when it throws —
 * as one indivisible operation. Every backend provides only that (and a read); the rules are
 * the same pure functions everywhere.
 */
export type Transact = <T>(
  agent: AgentId,
  step: (record: LeaseRecord | null, nowMs: number) => { write: LeaseRecord; result: T },
) => Promise<T>;

export function ruleCoordinator(
  kind: LeaseCoordinator['kind'],
  transact: Transact,
  read: LeaseCoordinator['read'],
  close: () => Promise<void>,
): LeaseCoordinator {
  return {
    kind,
    acquire: (agent: AgentId, device: DeviceId, ttlMs: number, floor?: Epoch) =>
      transact(agent, (record, now) => {
        const next = acquire(record, agent, device, ttlMs, now, floor);
        return { write: next, result: toLease(next) };
      }),
    renew: (agent, device, epoch, ttlMs) =>
      transact(agent, (record, now) => {
        const next = renew(record, agent, device, epoch, ttlMs, now);
        return { write: next, result: toLease(next) };
      }),
    release: (agent, device, epoch) =>
      transact(agent, (record, now) => ({ write: release(record, agent, device, epoch, now), result: { released_at_ms: now } })),
    read,
    close,
  };
}
