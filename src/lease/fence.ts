import type { RunRecord } from '../fold/intent-ledger.js';
import type { DeviceId, Epoch } from '../oplog/ids.js';
import { isLive, type LeaseRecord } from './lease-rules.js';

/**
 * The dispatch fence (proposals/leases.md §Fence): may this device perform run `run_id` of an agent at `epoch`?
 * Checked in this order, and only `proceed` allows the side effect:
 *
 * 1. the run is already committed → `already_committed`, whatever the epoch. The committed
 *    ledger comes first because it answers the question the host really asks — "has this effect
 *    happened?" — and a lease cannot: the effect may have been performed by an earlier holder;
 * 2. no live lease (none, released or expired by the coordinator's clock) → `not_held`;
 * 3. another device holds it, or at another epoch → `stale_epoch`, with the current epoch and holder;
 * 4. otherwise → `proceed`.
 */
export type FenceDecision =
  | { readonly decision: 'already_committed'; readonly op_id: string; readonly committed_by: DeviceId; readonly epoch: Epoch }
  | { readonly decision: 'not_held' }
  | { readonly decision: 'stale_epoch'; readonly current_epoch: Epoch; readonly holder: DeviceId }
  | { readonly decision: 'proceed'; readonly epoch: Epoch; readonly expires_at_ms: number };

export function fenceDecision(
  run: RunRecord | undefined,
  lease: LeaseRecord | null,
  device: DeviceId,
  epoch: Epoch,
  nowMs: number,
): FenceDecision {
  if (run?.status === 'committed')
    return { decision: 'already_committed', op_id: run.op_id, committed_by: run.device_id, epoch: run.epoch };
  if (!isLive(lease, nowMs)) return { decision: 'not_held' };
  if (lease.holder !== device || lease.epoch !== epoch)
    return { decision: 'stale_epoch', current_epoch: lease.epoch, holder: lease.holder };
  return { decision: 'proceed', epoch: lease.epoch, expires_at_ms: lease.expires_at_ms };
}
