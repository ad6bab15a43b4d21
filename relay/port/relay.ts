import type { Frontier, SeqFrontier } from '../../src/oplog/frontier.js';
import type { DeviceId } from '../../src/oplog/ids.js';
import type { ChainHead, OpRecord } from '../../src/oplog/op-record.js';
import type { RosterEntry } from '../../src/oplog/roster.js';

/**
 * The relay port (proposals/relay.md): stores and serves ops as opaque, already-signed records.
 * It never folds and never decrypts. A `Relay` is one device's connection to a relay; every
 * write it makes is to that device's own records (one writer per file in the directory relay).
 * Implementations: MemoryRelay (tests, simulation), DirectoryRelay, PostgresRelay; one contract
 * suite runs against all of them.
 *
 * Guarantees:
 * - `push` accepts only ops that continue the device's chain exactly: a held op re-pushed is
 *   deduplicated, a different op at a held seq is `relay_fork`, a skipped seq answers a `Gap`
 *   (an outcome a pusher expects after a relay lost ops, not a failure),
 *   another device's op is `relay_foreign_ops`, a broken chain or signature is `chain_broken`;
 *   it resolves once the ops are durable on the relay. Ops the relay holds damaged (`repairs`)
 *   that a push offers again are written again;
 * - `pull` returns other devices' ops above a per-device frontier, in seq order per device, at
 *   most `limit` and — past the first op — PULL_PAGE_BYTES of records per call (`more` says
 *   there is more); below a device's GC floor it answers `Truncated` (the pull's outcome, to
 *   rebase onto a checkpoint, not a failure);
 * - `ack` is monotone: a lower seq than already acked is refused (`relay_ack_regression`);
 * - the relay is untrusted storage for its readers: malformed records are skipped and counted
 *   in `anomalies()`, and readers verify chains and signatures themselves.
 */
export interface Relay {
  readonly self: DeviceId;
  /** Where the relay is, for messages. */
  readonly location: string;
  /** Registers this device's public key (trust on first use); idempotent for the same key. */
  register(publicKey: string): Promise<void>;
  /** `authentic`: which checkpoints may anchor a push that starts above the ops the relay holds (`pull`). */
  push(ops: readonly OpRecord[], authentic?: HeaderCheck): Promise<PushResult | Gap>;
  /**
   * `authentic`: which checkpoints count when the relay tells collected history (a checkpoint
   * covers it: rebase) from damage (stop, for the writer to push again); without it, all do.
   */
  pull(since: SeqFrontier, limit: number, authentic?: HeaderCheck): Promise<PullPage | Truncated>;
  /** Highest seq of `device` the relay holds, -1 for none. */
  head(device: DeviceId): Promise<number>;
  /**
   * What readers reported damaged for this device to mend: ranges of its own ops that the relay
   * holds but cannot serve (the relay confirmed it), to push again; and checkpoints, for a
   * device holding an intact copy to `restoreCheckpoint`. Empty for backends whose records
   * nothing but the relay writes.
   */
  repairs(authentic?: HeaderCheck): Promise<Repairs>;
  /** Writes `file` over the relay's copy of its checkpoint, which a reader found damaged. */
  restoreCheckpoint(file: CheckpointFile): Promise<void>;
  /**
   * Restarts this device's chain on the relay above `anchor`, an op of this device that a
   * stored checkpoint names in its frontier: the relay drops every op of this device it holds
   * and serves from `anchor.seq + 1` on, which the next push starts with. For a device whose
   * journal was compacted past ops the relay can no longer serve (damaged, or lost); devices
   * behind the anchor rebase onto a checkpoint. No such checkpoint → `relay_gap`.
   */
  restartAbove(anchor: ChainHead, authentic?: HeaderCheck): Promise<void>;
  /**
   * Tells the relay that something it served failed verification here: `device`'s op at `seq`
   * (this device cannot get past it), or a checkpoint. A relay whose stored files can be
   * damaged passes the report on (`repairs`) until this device acks past the op, or the
   * checkpoint's file changes; others ignore it.
   */
  reportDamage(damage: Damage): Promise<void>;
  /** Records what this device has durably folded, and that it was seen now. */
  ack(acked: SeqFrontier): Promise<void>;
  roster(): Promise<RosterView>;
  /** Stores a checkpoint (immutable); false when it was already there. */
  putCheckpoint(file: CheckpointFile): Promise<boolean>;
  /**
   * The header of the checkpoint with the highest frontier, or null; with `covering`, of the
   * highest of those that cover `device` up to `seq` at least (`latestCovering`); with
   * `authentic`, only among the headers it accepts (a forged header is never "the latest").
   */
  latestCheckpoint(covering?: Covering, authentic?: HeaderCheck): Promise<CheckpointHeaderJson | null>;
  /** The checkpoint's header and its sealed chunks, streamed; null when absent. */
  readCheckpoint(hash: string): Promise<CheckpointStream | null>;
  /** The checkpoint as file bytes (proposals/relay.md §Checkpoint files), for keeping a copy; null when absent. */
  checkpointBytes(hash: string): Promise<AsyncIterable<Uint8Array> | null>;
  /**
   * Drops this device's ops that every active device has acked and `bounds.verified` covers (its
   * newest op always stays, so its head stays known), and the authentic checkpoints beyond the
   * newest CHECKPOINTS_KEPT of them. Each device collects only its own ops: one writer per file.
   */
  gc(bounds: GcBounds): Promise<GcResult>;
  /** Calls `onChange` soon after another device writes to the relay. */
  watch(onChange: () => void): Promise<Watch>;
  /** Malformed or foreign files and records seen while reading, by kind. */
  anomalies(): Readonly<Record<string, number>>;
  /** The bytes the relay holds for every device (ops, checkpoints, bookkeeping), for the daemon's metrics. */
  bytes(): Promise<number>;
  close(): Promise<void>;
}

/** JSON objects as the relay carries them (relay/ may import nothing but src/oplog). */
export type JsonObject = OpRecord['payload'];

export interface PushResult {
  /** Ops newly stored. */
  readonly pushed: number;
  /** Ops the relay already held. */
  readonly deduped: number;
}

export type Damage = { readonly device: DeviceId; readonly seq: number } | { readonly checkpoint: string };

export interface Repairs {
  readonly ops: readonly SeqRange[];
  readonly checkpoints: readonly string[];
}

export const NO_REPAIRS: Repairs = { ops: [], checkpoints: [] };

/** The seqs `first` through `last` of one device. */
export interface SeqRange {
  readonly first: number;
  readonly last: number;
}

export interface PullPage {
  /** Per device in seq order; devices in any order. */
  readonly ops: readonly OpRecord[];
  /** True when more ops were available than `limit`. */
  readonly more: boolean;
}

/** A pull's other outcome: the relay no longer holds `device_id`'s ops after `since`; it serves from `floor` on. */
export interface Truncated {
  readonly truncated: { readonly device_id: DeviceId; readonly since: number; readonly floor: number };
}

/** A push's other outcome: it offered ops from `offered`, but the relay holds this device's chain only up to `head`. */
export interface Gap {
  readonly gap: { readonly device_id: DeviceId; readonly head: number; readonly offered: number };
}

export interface RosterView {
  readonly entries: readonly RosterEntry[];
  /** Per device, the lowest seq the relay still serves (0 until GC drops something). */
  readonly floor: SeqFrontier;
  /** Per device, the minimum over active devices of their acks. */
  readonly stable: SeqFrontier;
}

/**
 * A published checkpoint: the plaintext header (hashes and frontier) and its sealed chunks. A
 * chunk is opaque to the relay: the JSON text of an envelope, carried and stored as is.
 */
export interface CheckpointFile {
  readonly header: CheckpointHeaderJson;
  readonly chunks: readonly string[];
}

export interface CheckpointStream {
  readonly header: CheckpointHeaderJson;
  readonly chunks: AsyncIterable<string>;
}

export interface CheckpointHeaderJson extends JsonObject {
  checkpoint_hash: string;
}

/**
 * Tells an authentic checkpoint header from a forged one. The relay holds no key, so its readers
 * decide (proposals/threat-model.md): a relay never picks, keeps or collects by a header they
 * did not accept.
 */
export type HeaderCheck = (header: CheckpointHeaderJson) => boolean;

export interface GcBounds {
  /** The frontier of the checkpoint this device verified and compacted onto: no op of this device above it is dropped. */
  readonly verified: Frontier;
  /** Which checkpoints count when the newest are kept and the rest collected; others are left alone. */
  readonly authentic: HeaderCheck;
}

export interface GcResult {
  /** This device's ops no longer served. */
  readonly droppedOps: number;
  readonly droppedCheckpoints: number;
}

export interface Watch {
  close(): Promise<void>;
}

/** How many checkpoints GC keeps (the newest ones by frontier). */
export const CHECKPOINTS_KEPT = 2;

/** A device's ops up to `seq` that a checkpoint must cover (`Relay.latestCheckpoint`). */
export interface Covering {
  readonly device: DeviceId;
  readonly seq: number;
}
