import { verifyChain } from '../src/oplog/chain.js';
import type { CoreCrypto } from '../src/oplog/core-crypto.js';
import type { DeviceId, OpId } from '../src/oplog/ids.js';
import type { ChainHead, OpRecord } from '../src/oplog/op-record.js';
import { OpsyncError } from '../src/oplog/opsync-error.js';
import { notRegistered } from './relay-errors.js';

/**
 * What a relay does with a push, shared by every backend: which offered ops are new, which are
 * re-pushes of held ops, and which named error refuses the push.
 */
export interface PushPlan {
  readonly fresh: readonly OpRecord[];
  readonly deduped: number;
}

export interface PushContext {
  readonly self: DeviceId;
  readonly publicKey: string | null;
  readonly head: ChainHead | null;
  /** Lowest seq still held (ops below were collected and are taken as re-pushes). */
  readonly floor: number;
  /** The held op id at `seq`, for seqs from `floor` to `head.seq`. */
  heldOpId(seq: number): Promise<OpId | undefined>;
}

export async function planPush(ctx: PushContext, ops: readonly OpRecord[], crypto: CoreCrypto): Promise<PushPlan> {
  if (ctx.publicKey === null) throw notRegistered(ctx.self);
  const foreign = ops.find((op) => op.device_id !== ctx.self);
  if (foreign) {
    throw new OpsyncError('relay_foreign_ops', `Device ${ctx.self} may push only its own ops; it offered one of ${foreign.device_id}.`, {
      device_id: ctx.self,
      offered: foreign.device_id,
    });
  }
  const headSeq = ctx.head?.seq ?? -1;
  let deduped = 0;
  let index = 0;
  for (; index < ops.length && ops[index]!.seq <= headSeq; index++) {
    const op = ops[index]!;
    const held = op.seq < ctx.floor ? op.op_id : await ctx.heldOpId(op.seq);
    if (held !== op.op_id) {
      throw new OpsyncError('relay_fork', `Device ${ctx.self} offered a different op at seq ${op.seq} than the relay holds: its chain forked.`, {
        device_id: ctx.self,
        seq: op.seq,
        held: held ?? null,
        offered: op.op_id,
      });
    }
    deduped++;
  }
  const fresh = ops.slice(index);
  if (fresh.length > 0 && fresh[0]!.seq > headSeq + 1) {
    throw new OpsyncError('relay_gap', `Device ${ctx.self} pushed seq ${fresh[0]!.seq} but the relay holds up to ${headSeq}.`, {
      device_id: ctx.self,
      head: headSeq,
      offered: fresh[0]!.seq,
    });
  }
  const check = verifyChain({ device: ctx.self, anchor: ctx.head, ops: fresh, publicKey: ctx.publicKey }, crypto);
  if (check.error) {
    throw new OpsyncError('chain_broken', `The relay refused device ${ctx.self}'s push: ${check.error.message}.`, {
      device_id: ctx.self,
      kind: check.error.kind,
      seq: check.error.seq,
    });
  }
  return { fresh, deduped };
}
