import { openPayload } from '../crypto/envelope.js';
import type { Keyring } from '../crypto/keyring.js';
import type { OpEntry } from '../journal/journal.js';
import { verifyChain, type ChainErrorKind } from '../oplog/chain.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { DeviceId } from '../oplog/ids.js';
import type { ChainHead, OpRecord } from '../oplog/op-record.js';
import { groupBy } from '../util/group.js';

/**
 * What a device accepts from a pull (proposals/session.md §Pump: verify chains, signatures and skew):
 * per device, the ops that continue its chain from this device's head, authenticated by the
 * registered key, not too far in the future, decrypted where a key opens them. Nothing here
 * writes: the caller journals `accepted` durably before folding or acking it.
 */
export interface IntakeContext {
  readonly heads: ReadonlyMap<DeviceId, ChainHead>;
  readonly keys: ReadonlyMap<DeviceId, string>;
  readonly nowMs: number;
  readonly maxSkewMs: number;
  readonly crypto: CoreCrypto;
  readonly keyring: Keyring;
}

export type RejectionKind = ChainErrorKind | 'fork' | 'unknown_device';

export interface Rejection {
  readonly kind: RejectionKind;
  readonly device_id: DeviceId;
  readonly seq: number;
  readonly message: string;
}

export interface Quarantined {
  readonly op_id: string;
  readonly device_id: DeviceId;
  readonly seq: number;
  readonly ahead_ms: number;
}

export interface IntakeResult {
  /** Journal entries in chain order per device; `plain` is null for ops no key opens (held). */
  readonly accepted: readonly OpEntry[];
  readonly quarantined: readonly Quarantined[];
  readonly rejected: readonly Rejection[];
  /** Devices whose chain stopped at a quarantined or rejected op: skip them for the rest of the pump. */
  readonly stalled: ReadonlySet<DeviceId>;
}

export function intake(ops: readonly OpRecord[], ctx: IntakeContext): IntakeResult {
  const accepted: OpEntry[] = [];
  const quarantined: Quarantined[] = [];
  const rejected: Rejection[] = [];
  const stalled = new Set<DeviceId>();
  for (const [device, run] of groupBy(ops, (op) => op.device_id)) {
    run.sort((a, b) => a.seq - b.seq);
    const head = ctx.heads.get(device) ?? null;
    const fresh = freshRun(run, head);
    if (fresh.fork) {
      rejected.push(fresh.fork);
      stalled.add(device);
    }
    const publicKey = ctx.keys.get(device);
    if (publicKey === undefined) {
      if (fresh.ops.length > 0) {
        rejected.push({
          kind: 'unknown_device',
          device_id: device,
          seq: fresh.ops[0]!.seq,
          message: `device ${device} is not registered with the relay`,
        });
        stalled.add(device);
      }
      continue;
    }
    const limit = ctx.nowMs + ctx.maxSkewMs;
    const skewed = fresh.ops.findIndex((op) => op.hlc.wall_ms > limit);
    const inTime = skewed === -1 ? fresh.ops : fresh.ops.slice(0, skewed);
    const check = verifyChain({ device, anchor: head, ops: inTime, publicKey }, ctx.crypto);
    for (const op of check.valid) {
      const opened = openPayload(ctx.keyring, op.payload, op);
      accepted.push({ kind: 'op', op, plain: opened.ok ? opened.payload : null });
    }
    if (check.error) {
      rejected.push({ kind: check.error.kind, device_id: device, seq: check.error.seq, message: check.error.message });
      stalled.add(device);
    } else if (skewed !== -1) {
      const op = fresh.ops[skewed]!;
      quarantined.push({ op_id: op.op_id, device_id: device, seq: op.seq, ahead_ms: op.hlc.wall_ms - ctx.nowMs });
      stalled.add(device);
    }
  }
  return { accepted, quarantined, rejected, stalled };
}

/**
 * The ops above the head, with duplicates (the same op delivered twice) removed. A different op
 * at the head's seq, or two different ops at one seq, is a fork: evidence that the device's
 * chain split, refused by name.
 */
function freshRun(run: readonly OpRecord[], head: ChainHead | null): { ops: OpRecord[]; fork: Rejection | null } {
  const ops: OpRecord[] = [];
  for (const op of run) {
    const previous = ops.at(-1);
    const clash =
      (head && op.seq === head.seq && op.op_id !== head.op_id) || (previous && previous.seq === op.seq && previous.op_id !== op.op_id);
    if (clash)
      return {
        ops,
        fork: {
          kind: 'fork',
          device_id: op.device_id,
          seq: op.seq,
          message: `device ${op.device_id} seq ${op.seq}: two different ops claim this seq`,
        },
      };
    if ((head && op.seq <= head.seq) || previous?.seq === op.seq) continue;
    ops.push(op);
  }
  return { ops, fork: null };
}
