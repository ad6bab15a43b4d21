import type { Frontier } from '../oplog/frontier.js';
import type { DeviceId } from '../oplog/ids.js';
import type { RosterEntry } from '../oplog/roster.js';

/**
 * What a relay may drop once a checkpoint is durable: per device, every op at or below the
 * checkpoint's frontier — but only when every active device has acked that far, so nobody who
 * still needs an op to catch up loses it. Until then the plan refuses and names who is behind.
 */
export type CompactionPlan =
  | { readonly ok: true; readonly dropThrough: ReadonlyMap<DeviceId, number> }
  | { readonly ok: false; readonly behind: DeviceId; readonly device: DeviceId; readonly acked: number; readonly required: number };

export function planCompaction(checkpointFrontier: Frontier, roster: readonly RosterEntry[]): CompactionPlan {
  for (const entry of roster) {
    if (entry.status !== 'active') continue;
    for (const [device, head] of checkpointFrontier) {
      const acked = entry.acked.get(device) ?? -1;
      if (acked < head.seq) return { ok: false, behind: entry.device_id, device, acked, required: head.seq };
    }
  }
  return { ok: true, dropThrough: new Map([...checkpointFrontier].map(([device, head]) => [device, head.seq])) };
}
