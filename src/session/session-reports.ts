import type { StateHash } from '../fold/fold-state.js';
import type { Hlc } from '../oplog/hlc.js';
import type { CheckpointHash, DeviceId, OpId } from '../oplog/ids.js';
import type { Scope } from '../oplog/scope.js';
import type { Surface } from '../oplog/surface.js';
import type { JsonObject } from '../util/json.js';
import type { Quarantined } from './intake.js';

/** What a session is asked, and what it answers: the shapes behind the `sync.*` methods (proposals/rpc.md §Methods). */

export interface AppendInput {
  readonly surface: Surface;
  readonly payload: JsonObject;
  readonly scope: Scope;
}

export interface AppendResult {
  readonly op_id: OpId;
  readonly seq: number;
  readonly hlc: Hlc;
}

export interface PumpReport {
  readonly pushed: number;
  readonly push_deduped: number;
  readonly folded: number;
  /** Ops newly acknowledged to the relay in this pump. */
  readonly acked: number;
  readonly state_hash: StateHash;
  /** True when the pump had to rebase (its frontier fell below the relay's GC floor). */
  readonly rebased: boolean;
}

/** Where the ops of a change came from: this device's appends, another device's ops, held ops a new key opened. */
export type ChangeOrigin = 'local' | 'remote' | 'key';

/**
 * Something changed in the folded state (proposals/rpc.md §Change feed): every write, whoever
 * made it. Appends of one turn of the event loop make one change.
 */
export interface ChangeEvent {
  /** Counts changes since the session opened: a gap between two a subscriber sees means some were coalesced. */
  readonly change: number;
  /** The surfaces folded into, sorted. */
  readonly surfaces: readonly Surface[];
  readonly origins: readonly ChangeOrigin[];
  /** Ops folded. */
  readonly folded: number;
  readonly state_hash: StateHash;
  /** The state was replaced by a checkpoint's (a rebase): whatever a host shows may have changed. */
  readonly rebased: boolean;
}

export interface CheckpointReport {
  readonly published: boolean;
  readonly checkpoint_hash?: CheckpointHash;
  readonly reason?: string;
}

export interface CompactReport {
  readonly compacted: boolean;
  readonly base_checkpoint?: CheckpointHash;
  readonly relay_dropped_ops?: number;
  readonly reason?: string;
}

export interface RebaseReport {
  readonly rebased: boolean;
  readonly base_checkpoint: CheckpointHash | null;
  readonly kept_own_ops?: number;
  readonly reason?: string;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly entries: number;
  readonly problems: readonly string[];
}

export interface SessionStatus {
  readonly device_id: DeviceId;
  readonly state_hash: StateHash;
  readonly journal_frontier: Record<string, number>;
  readonly stable_frontier: Record<string, number>;
  readonly base_checkpoint: CheckpointHash | null;
  readonly roster: ReadonlyArray<{ device_id: DeviceId; status: string; last_seen_ms: number; acked: Record<string, number>; lag: number }>;
  readonly counts: {
    readonly records: number;
    readonly unpushed: number;
    readonly quarantined: number;
    readonly undecryptable: number;
    readonly skipped_payloads: number;
    readonly rejected: Record<string, number>;
    readonly ignored_relay_files: Record<string, number>;
  };
  readonly quarantine: readonly Quarantined[];
  readonly undecryptable_kids: readonly string[];
  readonly last_error: string | null;
  /**
   * How far this device's stamps run ahead of its wall clock (0 normally). Past `maxSkewMs`,
   * peers quarantine its new ops until their clocks get there: its clock was set ahead once, and
   * stamps never go back (proposals/op-record.md §HLC).
   */
  readonly clock_ahead_ms: number;
}
