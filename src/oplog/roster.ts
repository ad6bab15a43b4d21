import type { DeviceId } from './ids.js';
import type { SeqFrontier } from './frontier.js';

/**
 * The roster: every device registered with a relay, what it has acked and when it was last
 * seen. Shared by every relay backend (relay/ may import only oplog), so activity and the
 * stable frontier are computed by one function everywhere.
 */
export interface RosterEntry {
  readonly device_id: DeviceId;
  readonly public_key: string;
  readonly added_ms: number;
  readonly last_seen_ms: number;
  /** Per device, the highest seq this device has durably folded (absent: nothing). */
  readonly acked: SeqFrontier;
  readonly status: 'active' | 'evicted';
}

/** 30 days: a laptop left in a drawer for a month still catches up without a rebase. */
export const DEFAULT_EVICTION_HORIZON_MS = 30 * 24 * 60 * 60 * 1000;

/**
 * Which devices hold the stable frontier back. A device is active when it was seen within the
 * horizon *and* it holds everything the relay has garbage-collected (for every device X, it
 * acked at least `floor[X] - 1`, where `floor[X]` is the lowest seq of X the relay still
 * serves). So a device silent past the horizon stops holding the frontier back, GC proceeds,
 * and when it returns it stays evicted — it must rebase — until an ack shows it caught up.
 * The rule needs no shared mutable state: it is a function of what every device wrote.
 */
export function withStatus(
  entries: ReadonlyArray<Omit<RosterEntry, 'status'>>,
  floor: SeqFrontier,
  nowMs: number,
  horizonMs: number,
): RosterEntry[] {
  return entries.map((entry) => {
    const fresh = nowMs - entry.last_seen_ms <= horizonMs;
    const holdsFloor = [...floor].every(([device, first]) => (entry.acked.get(device) ?? -1) >= first - 1);
    return { ...entry, status: fresh && holdsFloor ? 'active' : 'evicted' };
  });
}

/**
 * Stable frontier: for each device, the minimum over active devices of what they acked. Every
 * active device durably holds every op at or below it, so it is safe to checkpoint and GC there.
 * With no active device nothing is stable.
 */
export function stableFrontier(roster: readonly RosterEntry[]): Map<DeviceId, number> {
  const active = roster.filter((entry) => entry.status === 'active');
  const frontier = new Map<DeviceId, number>();
  if (active.length === 0) return frontier;
  for (const { device_id } of roster) {
    let min = Infinity;
    for (const entry of active) min = Math.min(min, entry.acked.get(device_id) ?? -1);
    frontier.set(device_id, min);
  }
  return frontier;
}
