import { verifyChain } from '../../src/oplog/chain.js';
import type { CoreCrypto } from '../../src/oplog/core-crypto.js';
import type { DeviceId, OpId } from '../../src/oplog/ids.js';
import { opIdHolds, type ChainHead, type OpRecord } from '../../src/oplog/op-record.js';
import type { Gap, SeqRange } from './relay.js';
import { OpsyncError } from '../../src/util/opsync-error.js';
import { notRegistered } from './relay-errors.js';

/**
 * What a relay does with a push, shared by every backend: which offered ops are new, which are
 * re-pushes of held ops, and which named error refuses the push.
 */
export interface PushPlan {
  readonly fresh: readonly OpRecord[];
  readonly deduped: number;
  /**
   * Set when the relay held no op of the device and the push starts above a checkpoint that
   * covers the ops below it: the first seq the relay now serves (its floor for the device).
   */
  readonly floor?: number;
}

export interface PushContext {
  readonly self: DeviceId;
  readonly publicKey: string | null;
  readonly head: ChainHead | null;
  /** Lowest seq still held (ops below were collected and are taken as re-pushes). */
  readonly floor: number;
  /** The held op id at `seq`, for seqs from `floor` to `head.seq`. */
  heldOpId(seq: number): Promise<OpId | undefined>;
  /** The device's op at `seq` as a stored checkpoint names it (see `planPush`). */
  checkpointHead(seq: number): Promise<ChainHead | undefined>;
}

export async function planPush(ctx: PushContext, ops: readonly OpRecord[], crypto: CoreCrypto): Promise<PushPlan | Gap> {
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
      throw new OpsyncError(
        'relay_fork',
        `Device ${ctx.self} offered a different op at seq ${op.seq} than the relay holds: its chain forked.`,
        {
          device_id: ctx.self,
          seq: op.seq,
          held: held ?? null,
          offered: op.op_id,
        },
      );
    }
    deduped++;
  }
  const fresh = ops.slice(index);
  let anchor = ctx.head;
  let floor: number | undefined;
  if (fresh.length > 0 && fresh[0]!.seq > headSeq + 1) {
    // A device the relay holds no op of may start above seq 0 where a checkpoint stands in for
    // its earlier ops (it restarted its chain on the relay: `restartAbove`).
    const covered = ctx.head === null ? await ctx.checkpointHead(fresh[0]!.seq - 1) : undefined;
    if (covered === undefined || covered.op_id !== fresh[0]!.prev) {
      return { gap: { device_id: ctx.self, head: headSeq, offered: fresh[0]!.seq } };
    }
    anchor = covered;
    floor = fresh[0]!.seq;
  }
  const check = verifyChain({ device: ctx.self, anchor, ops: fresh, publicKey: ctx.publicKey }, crypto);
  if (check.error) {
    throw new OpsyncError('chain_broken', `The relay refused device ${ctx.self}'s push: ${check.error.message}.`, {
      device_id: ctx.self,
      kind: check.error.kind,
      seq: check.error.seq,
    });
  }
  return floor === undefined ? { fresh, deduped } : { fresh, deduped, floor };
}

export interface RestoreContext {
  readonly self: DeviceId;
  readonly publicKey: string;
  readonly range: SeqRange;
  /** The held op just below the range; undefined when none is held (the range starts at the floor). */
  readonly before: ChainHead | undefined;
  /** The `prev` of the held op just above the range; undefined when none is held. */
  readonly afterPrev: OpId | undefined;
  /** The op ids the relay could still read inside the range (a damaged file's valid prefix). */
  readonly held: ReadonlyMap<number, OpId>;
}

/**
 * Checks ops offered to restore a damaged range: exactly the range, a signed chain that links
 * to the held ops on both sides, and the same op wherever the relay could still read one. A
 * restore never replaces a readable op with another one (`relay_fork`).
 */
export function checkRestore(ctx: RestoreContext, run: readonly OpRecord[], crypto: CoreCrypto): void {
  const { self, range } = ctx;
  const first = run[0];
  const last = run.at(-1);
  if (!first || !last || first.seq !== range.first || last.seq !== range.last) {
    throw new OpsyncError(
      'relay_gap',
      `Device ${self} offered seqs ${first?.seq ?? '-'} to ${last?.seq ?? '-'} to restore its damaged seqs ${range.first} to ${range.last}.`,
      {
        device_id: self,
        first: range.first,
        last: range.last,
      },
    );
  }
  const forked = run.find((op) => (ctx.held.get(op.seq) ?? op.op_id) !== op.op_id);
  const seam = ctx.afterPrev !== undefined && ctx.afterPrev !== last.op_id ? range.last + 1 : undefined;
  if (forked || seam !== undefined) {
    const seq = forked?.seq ?? seam!;
    throw new OpsyncError('relay_fork', `Device ${self} offered a different op at seq ${seq} than the relay holds: its chain forked.`, {
      device_id: self,
      seq,
    });
  }
  const check = verifyChain({ device: self, anchor: anchorFor(run, ctx.before), ops: run, publicKey: ctx.publicKey }, crypto);
  if (check.error) {
    throw new OpsyncError('chain_broken', `The relay refused device ${self}'s restore: ${check.error.message}.`, {
      device_id: self,
      kind: check.error.kind,
      seq: check.error.seq,
    });
  }
}

/** Refuses a restart above `anchor` that no stored checkpoint covers exactly. */
export function checkRestartAnchor(self: DeviceId, anchor: ChainHead, covered: ChainHead | undefined): void {
  if (covered?.op_id === anchor.op_id) return;
  throw new OpsyncError(
    'relay_gap',
    `Device ${self} cannot restart its ops above seq ${anchor.seq}: no checkpoint on the relay covers it up to that op.`,
    {
      device_id: self,
      seq: anchor.seq,
    },
  );
}

/**
 * What a stored run of a device's ops must continue: the held op before it, or — when none is
 * held (the run starts at the floor) — the `prev` its first op names, taken on trust. Null for
 * a run from seq 0 (or one whose first op names no `prev`, which verification then refuses).
 */
export function anchorFor(run: readonly OpRecord[], before: ChainHead | undefined): ChainHead | null {
  const first = run[0];
  if (!first || first.prev === null) return null;
  return before ?? { seq: first.seq - 1, op_id: first.prev, hlc: { ...first.hlc, wall_ms: -1 } };
}

/**
 * Whether `op` is one of `self`'s own, proven by its own key: its op_id holds and its signature
 * verifies. A device's head on the relay, and so its clone check, comes only from such ops: a
 * record anyone can write into its folder or rows proves nothing (proposals/threat-model.md).
 */
export function isOwnSigned(self: DeviceId, op: OpRecord, publicKey: string, crypto: CoreCrypto): boolean {
  return op.device_id === self && opIdHolds(op, crypto) && crypto.verify(publicKey, op.op_id, op.sig);
}
