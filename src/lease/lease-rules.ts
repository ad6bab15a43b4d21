import { maxEpoch, nextEpoch, NO_EPOCH, type AgentId, type DeviceId, type Epoch } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';

/**
 * Execution leases (proposals/leases.md §Lease rules): the rules every coordinator applies, as pure
 * functions of the stored record and the coordinator's clock. Backends differ only in how they
 * make "read the record, apply a rule, write the result" atomic.
 *
 * - `acquire` succeeds only when the agent's lease is unheld, released or expired — also for the
 *   current holder, which must renew instead — and mints epoch = previous + 1. Epochs are stored
 *   even after release, so they are never reused and never decrease.
 * - `renew` and `release` need the holder and the current epoch of a lease that has not expired;
 *   otherwise they fail as lost, naming the claimed and the current epoch.
 */
export interface LeaseRecord {
  readonly agent_id: AgentId;
  /** The holder, or null once released. */
  readonly holder: DeviceId | null;
  /** The last epoch granted for this agent. */
  readonly epoch: Epoch;
  readonly granted_at_ms: number;
  readonly expires_at_ms: number;
}

/** A record with a holder. */
export type HeldRecord = LeaseRecord & { readonly holder: DeviceId };

/** A held lease as the API reports it; times are the coordinator's. */
export interface Lease {
  readonly agent_id: AgentId;
  readonly holder: DeviceId;
  readonly epoch: Epoch;
  readonly granted_at_ms: number;
  readonly expires_at_ms: number;
}

/** Lease durations accepted: from 100 ms to one day. */
export const MIN_TTL_MS = 100;
export const MAX_TTL_MS = 86_400_000;

export function isLive(record: LeaseRecord | null, nowMs: number): record is HeldRecord {
  return record !== null && record.holder !== null && record.expires_at_ms > nowMs;
}

/**
 * Takes the lease, minting the epoch after both the stored one and `floor`: the highest epoch
 * the synced intent ledger has seen for the agent. The floor matters only when the store lost
 * its record (a lease folder deleted and re-created): epochs then continue above every epoch
 * any device recorded an intent at, instead of starting over at 1.
 */
export function acquire(
  record: LeaseRecord | null,
  agent: AgentId,
  device: DeviceId,
  ttlMs: number,
  nowMs: number,
  floor: Epoch = NO_EPOCH,
): HeldRecord {
  if (isLive(record, nowMs)) {
    const who = record.holder === device ? 'this device already holds it (renew it instead)' : `device ${record.holder} holds it`;
    throw new OpsyncError(
      'lease_held',
      `The lease of agent ${agent} is held: ${who} at epoch ${record.epoch} for another ${record.expires_at_ms - nowMs} ms.`,
      {
        agent_id: agent,
        holder: record.holder,
        epoch: record.epoch,
        expires_at_ms: record.expires_at_ms,
      },
    );
  }
  const last = maxEpoch(record?.epoch ?? NO_EPOCH, floor);
  if (last >= Number.MAX_SAFE_INTEGER) {
    throw new OpsyncError(
      'lease_epochs_exhausted',
      `Agent ${agent} has used every epoch up to ${last} (an intent was recorded at that epoch); its lease cannot be granted again, so use a new agent id.`,
      { agent_id: agent, epoch: last },
    );
  }
  return { agent_id: agent, holder: device, epoch: nextEpoch(last), granted_at_ms: nowMs, expires_at_ms: nowMs + ttlMs };
}

export function renew(
  record: LeaseRecord | null,
  agent: AgentId,
  device: DeviceId,
  epoch: Epoch,
  ttlMs: number,
  nowMs: number,
): HeldRecord {
  assertHolds(record, agent, device, epoch, nowMs, 'renew');
  return { ...record, granted_at_ms: nowMs, expires_at_ms: nowMs + ttlMs };
}

export function release(record: LeaseRecord | null, agent: AgentId, device: DeviceId, epoch: Epoch, nowMs: number): LeaseRecord {
  assertHolds(record, agent, device, epoch, nowMs, 'release');
  return { ...record, holder: null, expires_at_ms: nowMs };
}

export function toLease(record: HeldRecord): Lease {
  return {
    agent_id: record.agent_id,
    holder: record.holder,
    epoch: record.epoch,
    granted_at_ms: record.granted_at_ms,
    expires_at_ms: record.expires_at_ms,
  };
}

function assertHolds(
  record: LeaseRecord | null,
  agent: AgentId,
  device: DeviceId,
  epoch: Epoch,
  nowMs: number,
  action: string,
): asserts record is HeldRecord {
  if (isLive(record, nowMs) && record.holder === device && record.epoch === epoch) return;
  const current = record?.epoch ?? 0;
  const why = !isLive(record, nowMs)
    ? `it is not held (it ${record?.holder === null ? 'was released' : 'expired'})`
    : record.epoch !== epoch
      ? `the current epoch is ${current}`
      : `device ${record.holder} holds it`;
  throw new OpsyncError('lease_lost', `Cannot ${action} the lease of agent ${agent} at epoch ${epoch}: ${why}.`, {
    agent_id: agent,
    claimed_epoch: epoch,
    current_epoch: current,
    holder: isLive(record, nowMs) ? record.holder : null,
  });
}
