import { parseFrontier, type Frontier, type SeqFrontier } from '../src/oplog/frontier.js';
import type { DeviceId } from '../src/oplog/ids.js';
import { stableFrontier, withStatus, type RosterEntry } from '../src/oplog/roster.js';
import type { CheckpointHeaderJson, RosterView } from './relay.js';

/** Pieces of relay logic that every backend computes the same way. */

/** The frontier a checkpoint header claims, or null when it is malformed. */
export function headerFrontier(header: CheckpointHeaderJson): Frontier | null {
  return parseFrontier(header.frontier);
}

/** Total ops a frontier covers: how "late" a checkpoint is, for choosing the latest one. */
export function frontierWeight(frontier: Frontier): number {
  let total = 0;
  for (const head of frontier.values()) total += head.seq + 1;
  return total;
}

/** Checkpoint headers ordered newest first (by frontier weight, then hash for a stable order). */
export function newestFirst(headers: readonly CheckpointHeaderJson[]): CheckpointHeaderJson[] {
  return headers
    .map((header) => ({ header, weight: frontierWeight(headerFrontier(header) ?? new Map()) }))
    .sort((a, b) => b.weight - a.weight || (a.header.checkpoint_hash < b.header.checkpoint_hash ? -1 : 1))
    .map((entry) => entry.header);
}

export function rosterView(entries: ReadonlyArray<Omit<RosterEntry, 'status'>>, floor: SeqFrontier, nowMs: number, horizonMs: number): RosterView {
  const withStatuses = withStatus(entries, floor, nowMs, horizonMs);
  return { entries: withStatuses, floor, stable: stableFrontier(withStatuses) };
}

/**
 * How far this device may collect its own ops: at or below both the stable frontier (every
 * active device holds them) and the newest checkpoint's head for it (a checkpoint stands in for
 * them). -1 when nothing may go.
 */
export function collectableThrough(self: DeviceId, view: RosterView, newest: CheckpointHeaderJson | null): number {
  const covered = newest ? (headerFrontier(newest)?.get(self)?.seq ?? -1) : -1;
  return Math.min(view.stable.get(self) ?? -1, covered);
}
