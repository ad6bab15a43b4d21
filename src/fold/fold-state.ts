import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { AgentId, Brand, Epoch } from '../oplog/ids.js';
import { compareOps } from '../oplog/op-record.js';
import { OpsyncError } from '../util/opsync-error.js';
import { tierOf, type Surface } from '../oplog/surface.js';
import { compareStrings } from '../util/ordered.js';
import type { ApplyOutcome, FoldedRecord, FoldOp } from './fold-op.js';
import { IntentLedger, runKey, type IntentCandidate, type RunRecord } from './intent-ledger.js';
import { MultisetHash } from './multiset-hash.js';
import { DEFAULT_CONVERSATION, payloadProblem } from './payload-rules.js';

/** `"sh-"` + 64 hex digits: equal on two devices exactly when they folded the same op-set. */
export type StateHash = Brand<string, 'StateHash'>;

/** A record with its key, as readers and checkpoints see it. */
export interface KeyedRecord extends FoldedRecord {
  readonly surface: Surface;
  /** `payload.id` for set and register tiers, the op id for event streams. */
  readonly key: string;
}

export interface SkippedOp {
  readonly op_id: string;
  readonly surface: Surface;
  readonly reason: string;
}

export interface Page<T> {
  readonly items: readonly T[];
  /** Cursor for the next page, or null at the end. */
  readonly next: string | null;
}

/**
 * The materialized state: a pure function of the op-set (proposals/fold.md).
 *
 * | tier     | surfaces                               | rule                                            |
 * |----------|----------------------------------------|-------------------------------------------------|
 * | set      | knowledge, skill, trajectory, run      | by payload.id; earliest (hlc, op_id) wins       |
 * | events   | conversation, routing                  | by op_id; read in (hlc, op_id) order            |
 * | lww      | declagent, registry:<kind>             | by payload.id; latest (hlc, op_id) wins         |
 * | intent   | intent                                 | the leased ledger (intent-ledger.ts)            |
 *
 * Every rule is a join (max or union), so any order, duplication or grouping of the same ops
 * yields the same state. `apply` is incremental — constant work per op plus a 256-bit add to
 * the multiset hash — and `stateHash` hashes only the 32-byte accumulator.
 */
export class FoldState {
  private readonly keyed = new Map<Surface, Map<string, FoldedRecord>>();
  private readonly surfaceEvents = new Map<Surface, EventStream>();
  private readonly conversations = new Map<string, EventStream>();
  private readonly events = new Map<string, FoldedRecord>();
  private readonly sortedKeys = new Map<Surface, string[]>();
  private readonly hash = new MultisetHash();
  private readonly ledger: IntentLedger;
  private records = 0;
  private cachedHash: StateHash | null = null;
  private skippedCount = 0;
  private readonly recentSkips: SkippedOp[] = [];

  constructor(private readonly crypto: Pick<CoreCrypto, 'sha256Hex'>) {
    this.ledger = new IntentLedger(this.hash, (text) => crypto.sha256Hex(text));
  }

  /** Folds one op. A payload that breaks its surface's rules is counted and skipped. */
  apply(op: FoldOp): ApplyOutcome {
    const problem = payloadProblem(op.surface, op.scope, op.payload);
    if (problem !== null) {
      this.skip(op, problem);
      return 'skipped';
    }
    return this.applyValid(op);
  }

  /** Folds an op whose payload already passed its surface's rules (an own append checks them before it mints the op). */
  applyValid(op: FoldOp): ApplyOutcome {
    const outcome = this.fold(op);
    if (outcome !== 'unchanged') this.cachedHash = null;
    return outcome;
  }

  stateHash(): StateHash {
    this.cachedHash ??= `sh-${this.crypto.sha256Hex(this.hash.hex())}` as StateHash;
    return this.cachedHash;
  }

  /** Records in the state: keyed records, events, runs and agents. */
  get recordCount(): number {
    return this.records + this.ledger.runCount + this.ledger.agentCount;
  }

  get skipped(): { count: number; recent: readonly SkippedOp[] } {
    return { count: this.skippedCount, recent: this.recentSkips };
  }

  /** Counts of records per surface (intent: runs). */
  surfaceCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const [surface, map] of this.keyed) counts[surface] = map.size;
    for (const [surface, stream] of this.surfaceEvents) counts[surface] = stream.items.length;
    if (this.ledger.runCount > 0) counts.intent = this.ledger.runCount;
    return counts;
  }

  record(surface: Surface, key: string): FoldedRecord | undefined {
    return this.keyed.get(surface)?.get(key);
  }

  /**
   * One page of a surface's records: keyed tiers in key order, event streams in (hlc, op_id)
   * order. `after` is the cursor a previous page returned.
   */
  page(surface: Surface, after: string | null, limit: number): Page<KeyedRecord> {
    const tier = tierOf(surface);
    if (tier === 'events') {
      const page = this.eventPage(sortedItems(this.surfaceEvents.get(surface)), after, limit);
      return { items: page.items.map((record) => ({ ...record, surface, key: record.op_id })), next: page.next };
    }
    if (tier === 'intent') {
      const runs = [...this.ledger.allRuns()].map((run) => runKey(run.agent_id, run.run_id)).sort(compareStrings);
      const start = after === null ? 0 : upperBound(runs, after);
      const items = runs.slice(start, start + limit).map((key) => this.runRecord(key));
      return { items, next: start + limit < runs.length ? items.at(-1)!.key : null };
    }
    const map = this.keyed.get(surface);
    if (!map) return { items: [], next: null };
    const keys = this.keysOf(surface, map);
    const start = after === null ? 0 : upperBound(keys, after);
    const items = keys.slice(start, start + limit).map((key) => ({ ...map.get(key)!, surface, key }));
    return { items, next: start + limit < keys.length ? items.at(-1)!.key : null };
  }

  /** A conversation's turns in (hlc, op_id) order. */
  conversation(conversationId: string): readonly FoldedRecord[] {
    return sortedItems(this.conversations.get(conversationId));
  }

  /** One page of a conversation's turns in (hlc, op_id) order, after the turn whose op id is `after`. */
  conversationPage(conversationId: string, after: string | null, limit: number): Page<FoldedRecord> {
    return this.eventPage(this.conversation(conversationId), after, limit);
  }

  conversationIds(): string[] {
    return [...this.conversations.keys()].sort(compareStrings);
  }

  run(agentId: string, runId: string): RunRecord | undefined {
    return this.ledger.run(agentId, runId);
  }

  agentEpoch(agentId: string): Epoch | undefined {
    return this.ledger.agentEpoch(agentId);
  }

  /** Every keyed record and event (for checkpoints), unsorted. */
  *allRecords(): IterableIterator<KeyedRecord> {
    for (const [surface, map] of this.keyed) {
      for (const [key, record] of map) yield { ...record, surface, key };
    }
    for (const [surface, stream] of this.surfaceEvents) {
      for (const record of stream.items) yield { ...record, surface, key: record.op_id };
    }
  }

  allRuns(): IterableIterator<IntentCandidate> {
    return this.ledger.allRuns();
  }

  allAgents(): Array<[string, Epoch]> {
    return this.ledger.allAgents();
  }

  /** Puts a checkpointed intent back (runs are checkpointed as their winning candidates). */
  restoreRun(candidate: IntentCandidate): void {
    this.ledger.offer(candidate);
    this.cachedHash = null;
  }

  /** Puts a checkpointed agent epoch back (it may come from an intent that no longer wins its run). */
  restoreAgent(agentId: AgentId, epoch: Epoch): void {
    this.ledger.raiseEpoch(agentId, epoch);
    this.cachedHash = null;
  }

  /**
   * Folds in everything `other` holds, as a checkpoint restore would: afterwards this is the
   * state of the union of both op-sets, since every fold rule is a join (the winner of a union
   * is the better of the two winners; events and the ledger's candidates and epochs unite).
   */
  merge(other: FoldState): void {
    for (const { op_id, device_id, hlc, scope, surface, payload } of other.allRecords())
      this.apply({ op_id, device_id, hlc, scope, surface, payload });
    for (const run of other.allRuns()) this.restoreRun(run);
    for (const [agent, epoch] of other.allAgents()) this.restoreAgent(agent as AgentId, epoch);
  }

  private fold(op: FoldOp): ApplyOutcome {
    switch (tierOf(op.surface)) {
      case 'set':
        return this.foldKeyed(op, (incoming, current) => compareOps(incoming, current) < 0);
      case 'lww':
        return this.foldKeyed(op, (incoming, current) => compareOps(incoming, current) > 0);
      case 'events':
        return this.foldEvent(op);
      case 'intent':
        return this.ledger.apply(op);
    }
  }

  private foldKeyed(op: FoldOp, wins: (incoming: FoldOp, current: FoldedRecord) => boolean): ApplyOutcome {
    let map = this.keyed.get(op.surface);
    if (!map) {
      map = new Map();
      this.keyed.set(op.surface, map);
    }
    const key = op.payload.id as string;
    const current = map.get(key);
    if (current && (current.op_id === op.op_id || !wins(op, current))) return 'unchanged';
    map.set(key, toRecord(op));
    this.hash.add(op.op_id, 3);
    if (current) {
      this.hash.remove(current.op_id, 3);
      return 'replaced';
    }
    this.records++;
    this.sortedKeys.delete(op.surface);
    return 'inserted';
  }

  private foldEvent(op: FoldOp): ApplyOutcome {
    if (this.events.has(op.op_id)) return 'unchanged';
    const record = toRecord(op);
    this.events.set(op.op_id, record);
    pushEvent(this.surfaceEvents, op.surface, record);
    if (op.surface === 'conversation') {
      const conversationId = (op.payload.conversation_id as string | undefined) ?? DEFAULT_CONVERSATION;
      pushEvent(this.conversations, conversationId, record);
    }
    this.hash.add(op.op_id, 3);
    this.records++;
    return 'inserted';
  }

  /** Finds the cursor by binary search on (hlc, op_id): a page costs O(log n + limit). */
  private eventPage(items: readonly FoldedRecord[], after: string | null, limit: number): Page<FoldedRecord> {
    let start = 0;
    if (after !== null) {
      const cursor = this.events.get(after);
      if (!cursor)
        throw new OpsyncError(
          'invalid_params',
          `The cursor ${JSON.stringify(after.slice(0, 80))} names no event on this device; pass the \`next\` of a previous page.`,
          { after },
        );
      start = upperBoundBy(items, cursor, compareOps);
    }
    const slice = items.slice(start, start + limit);
    return { items: slice, next: start + limit < items.length ? slice.at(-1)!.op_id : null };
  }

  private runRecord(key: string): KeyedRecord {
    const slash = key.indexOf('/');
    const run = this.ledger.run(key.slice(0, slash), key.slice(slash + 1))!;
    return {
      surface: 'intent',
      key,
      op_id: run.op_id,
      hlc: run.hlc,
      device_id: run.device_id,
      scope: 'personal',
      payload: { id: run.run_id, agent_id: run.agent_id, epoch: run.epoch, status: run.status },
    };
  }

  private keysOf(surface: Surface, map: Map<string, FoldedRecord>): string[] {
    let keys = this.sortedKeys.get(surface);
    if (!keys) {
      keys = [...map.keys()].sort(compareStrings);
      this.sortedKeys.set(surface, keys);
    }
    return keys;
  }

  private skip(op: FoldOp, reason: string): void {
    this.skippedCount++;
    this.recentSkips.push({ op_id: op.op_id, surface: op.surface, reason });
    if (this.recentSkips.length > MAX_RECENT_SKIPS) this.recentSkips.shift();
  }
}

const MAX_RECENT_SKIPS = 16;

/** Events in arrival order, sorted lazily: folding appends, the first read after it sorts. */
interface EventStream {
  items: FoldedRecord[];
  sorted: boolean;
}

function pushEvent<K>(streams: Map<K, EventStream>, key: K, record: FoldedRecord): void {
  const stream = streams.get(key);
  if (!stream) {
    streams.set(key, { items: [record], sorted: true });
    return;
  }
  const last = stream.items.at(-1);
  if (last && compareOps(last, record) > 0) stream.sorted = false;
  stream.items.push(record);
}

function sortedItems(stream: EventStream | undefined): readonly FoldedRecord[] {
  if (!stream) return [];
  if (!stream.sorted) {
    stream.items.sort(compareOps);
    stream.sorted = true;
  }
  return stream.items;
}

function toRecord(op: FoldOp): FoldedRecord {
  return { op_id: op.op_id, hlc: op.hlc, device_id: op.device_id, scope: op.scope, payload: op.payload };
}

/** Index of the first key greater than `after` in sorted `keys`. */
function upperBound(keys: readonly string[], after: string): number {
  return upperBoundBy(keys, after, compareStrings);
}

/** Index of the first item greater than `after` in `items` sorted by `compare`. */
function upperBoundBy<T>(items: readonly T[], after: T, compare: (a: T, b: T) => number): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compare(items[mid]!, after) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
