import type { CheckpointHash } from '../oplog/ids.js';
import type { Frontier } from '../oplog/frontier.js';
import type { OpRecord } from '../oplog/op-record.js';
import type { JsonObject } from '../util/json.js';

/**
 * The journal port: one device's append-only record of its own ops and the remote ops it has
 * accepted (proposals/journal.md). Implementations: FileJournal (checksummed lines, group-commit
 * fdatasync) and MemoryJournal (tests, simulation); one contract suite runs against both.
 *
 * Guarantees:
 * - `append` resolves only once its entries are durable, and entries become durable in call order;
 * - `replay` visits every durable entry in append order;
 * - `rewrite` atomically replaces the journal: a crash leaves either the old or the new one;
 * - one writer: opening a journal that is open elsewhere fails with `journal_locked`;
 * - after a failed write the journal refuses every further append (`journal_failed`): the state
 *   of the file is unknown, and only reopening (which recovers the tail) is safe.
 */
export interface Journal {
  /** Where the journal lives, for messages. */
  readonly location: string;
  append(entries: readonly JournalEntry[]): Promise<void>;
  replay(visit: JournalVisitor): Promise<void>;
  /**
   * Replaces the journal with `plan.head` followed by every current entry for which
   * `plan.keep` is true, in order. Appends made while it runs are written after it, to the new journal.
   */
  rewrite(plan: RewritePlan): Promise<void>;
  /** Waits for pending appends, then releases the journal. */
  close(): Promise<void>;
}

export type JournalEntry = OpEntry | BaseEntry;

/** An op this device holds. `plain` is the decrypted payload, or null while no key opens it. */
export interface OpEntry {
  readonly kind: 'op';
  readonly op: OpRecord;
  readonly plain: JsonObject | null;
}

/** Heads a compacted journal: the checkpoint whose state stands in for the dropped prefix. */
export interface BaseEntry {
  readonly kind: 'base';
  readonly checkpoint_hash: CheckpointHash;
  readonly frontier: Frontier;
}

/** `line` is the entry's 1-based line in the journal file (its index + 1 in memory). */
export type JournalVisitor = (entry: JournalEntry, line: number) => void;

export interface RewritePlan {
  readonly head: readonly JournalEntry[];
  keep(entry: JournalEntry): boolean;
  /** Hears how many bytes of the old journal were read, of its size. */
  readonly progress?: ((done: number, total: number) => void) | undefined;
}

/** What opening a journal found and repaired. */
export interface JournalRecovery {
  /** Lines cut from a torn tail (an append that never became durable). */
  readonly cutLines: number;
  readonly cutBytes: number;
}
