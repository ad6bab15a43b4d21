import type { DeviceKey } from '../crypto/device-key.js';
import { openPayload } from '../crypto/envelope.js';
import type { Keyring } from '../crypto/keyring.js';
import { inlineMinter, type MinterStart, type OpMinter } from '../crypto/op-minter.js';
import type { ScopeKey } from '../crypto/scope-key.js';
import type { FoldOp } from '../fold/fold-op.js';
import { FoldState } from '../fold/fold-state.js';
import type { BaseEntry, Journal, JournalEntry, JournalVisitor, OpEntry } from '../journal/journal.js';
import { JournalVerifier } from '../journal/journal-verifier.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { Frontier } from '../oplog/frontier.js';
import { compareHlc, HlcClock, type Hlc } from '../oplog/hlc.js';
import type { DeviceId, OpId } from '../oplog/ids.js';
import { rememberRecordText, type ChainHead, type OpRecord } from '../oplog/op-record.js';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
import type { Scope } from '../oplog/scope.js';
import type { Surface } from '../oplog/surface.js';
import type { JsonObject } from '../util/json.js';
import { compareStrings } from '../util/ordered.js';
import { auditJournal } from './journal-audit.js';
import type { SessionLog } from './session-log.js';
import type { Progress, ProgressStep } from '../util/progress.js';
import type { VerifyReport } from './session-reports.js';

export interface ReplicaDeps {
  readonly device: DeviceId;
  readonly deviceKey: DeviceKey;
  readonly keyring: Keyring;
  readonly crypto: CoreCrypto;
  /** Wall clock (ms); injected so simulations control time. */
  readonly now: () => number;
  /** Where the journal lives, for messages. */
  readonly journalLocation: string;
  readonly openJournal: (visit: JournalVisitor) => Promise<Journal>;
  /** Builds the op minter once the chain head is known (default: inline, in this thread). */
  readonly createMinter?: ((start: MinterStart) => OpMinter) | undefined;
  readonly log?: SessionLog | undefined;
  /** Hears how far the long steps have come: compaction here, the checkpoint loads of `BaseCheckpoints`. */
  readonly progress?: Progress | undefined;
}

/** What the journal held when it was opened, beyond what the replica folded at once. */
export interface Loaded {
  readonly replica: Replica;
  /** The journal's base checkpoint marker, if it has one; its state is not folded yet. */
  readonly base: BaseEntry | null;
  /** The entries above the base, folded once the base's state is loaded (`Replica.foldOnto`). */
  readonly tail: readonly OpEntry[];
  /** How many op entries the journal held. */
  readonly ops: number;
}

/** An own op to append: its payload already checked, and its canonical text. */
export interface OwnOp {
  readonly surface: Surface;
  readonly scope: Scope;
  readonly payload: JsonObject;
  readonly plainText: string;
}

/** The ops of a cut (`Replica.foldCut`): the state at it, its heads, what lies above, and the newest own op replayed. */
export interface Cut {
  readonly state: FoldState;
  readonly frontier: Map<DeviceId, ChainHead>;
  readonly above: FoldOp[];
  readonly ownSeen: number;
}

/**
 * This device's copy of the op-set (proposals/session.md §Replica): the journal, the state folded
 * from it, the head of every device's chain, the ops held for a key, and the clock. It appends own
 * ops, accepts verified remote ones, and replaces its base; it never reaches the relay.
 *
 * Invariants: an op is folded only once it is durable in the journal; a failed journal write stops
 * every later write (`failure`), since the file's state is unknown.
 */
export class Replica {
  /** Per device, the newest op durable in the journal (own device included). */
  private readonly chainHeads = new Map<DeviceId, ChainHead>();
  /** The seq of the newest own op handed to the minter (it may still be on its way to the journal). */
  private mintedSeq: number;
  /** The journal write of the newest own op; rewrites and audits wait for it. */
  private lastDurable: Promise<unknown> = Promise.resolve();
  private failed: OpsyncError | null = null;
  /** Surfaces folded into since `takeChanged` last ran, for the change feed (proposals/rpc.md §Change feed). */
  private readonly changed = new Set<Surface>();

  private constructor(
    private readonly deps: ReplicaDeps,
    private readonly journal: Journal,
    private readonly clock: HlcClock,
    private readonly minter: OpMinter,
    heads: ReadonlyMap<DeviceId, ChainHead>,
    private fold: FoldState,
    private readonly heldOps: Held,
  ) {
    for (const [device, head] of heads) this.chainHeads.set(device, head);
    this.mintedSeq = this.ownHead?.seq ?? -1;
  }

  /**
   * Opens the journal and verifies it line by line, folding it when it has no base; `ownOp` sees
   * every own op, in seq order (the outbox queues those the relay lacks).
   */
  static async open(deps: ReplicaDeps, ownOp: (op: OpRecord) => void): Promise<Loaded> {
    const verifier = new JournalVerifier(deps.journalLocation);
    const fold = new FoldState(deps.crypto);
    const held: Held = new Map();
    const tail: OpEntry[] = [];
    let base: BaseEntry | null = null;
    let latest: Hlc | null = null;
    const journal = await deps.openJournal((entry, line) => {
      verifier.check(entry, line);
      if (entry.kind === 'base') {
        base = entry;
        for (const head of entry.frontier.values()) latest = later(latest, head.hlc);
        return;
      }
      latest = later(latest, entry.op.hlc);
      if (entry.op.device_id === deps.device) ownOp(entry.op);
      if (base) tail.push(entry);
      else foldEntry(entry, fold, held, deps.keyring);
    });
    let minter: OpMinter | null = null;
    try {
      const ownHead = verifier.heads.get(deps.device) ?? null;
      const clock = new HlcClock(deps.device, deps.now, latest ?? undefined);
      minter = (deps.createMinter ?? inlineMinter)({
        device: deps.device,
        deviceKey: deps.deviceKey,
        keyring: deps.keyring,
        prev: ownHead?.op_id ?? null,
        crypto: deps.crypto,
      });
      await minter.ready();
      const replica = new Replica(deps, journal, clock, minter, verifier.heads, fold, held);
      return { replica, base, tail, ops: verifier.ops };
    } catch (error) {
      await minter?.close();
      await journal.close();
      throw error;
    }
  }

  /** The folded state (replaced wholesale by a rebase; read it through this getter). */
  get state(): FoldState {
    return this.fold;
  }

  get heads(): ReadonlyMap<DeviceId, ChainHead> {
    return this.chainHeads;
  }

  /** The newest own op durable in the journal. */
  get ownHead(): ChainHead | null {
    return this.chainHeads.get(this.deps.device) ?? null;
  }

  /** The seq of the newest own op handed to the minter (appends in flight included). */
  get ownSeq(): number {
    return this.mintedSeq;
  }

  /** Ops held for a key, by op id. */
  get held(): ReadonlyMap<OpId, { readonly device: DeviceId; readonly seq: number; readonly kid: string | null }> {
    return this.heldOps;
  }

  /** Why the replica takes no more writes, once a journal write failed. */
  get failure(): OpsyncError | null {
    return this.failed;
  }

  get clockAheadMs(): number {
    return this.clock.aheadOfWall();
  }

  /** Per device, the seq of its newest op in the journal. */
  seqs(): Map<DeviceId, number> {
    return new Map([...this.chainHeads].map(([device, head]) => [device, head.seq]));
  }

  /**
   * Mints, journals and folds an own op. The minter answers in request order and the journal
   * commits in call order, so own ops reach the journal in seq order without another queue.
   */
  async appendOwn(own: OwnOp): Promise<OpRecord> {
    const seq = ++this.mintedSeq;
    const minted = this.minter.mint({ seq, hlc: this.clock.tick(), scope: own.scope, surface: own.surface, plainText: own.plainText });
    const durable = minted.then(({ op, record }) => {
      rememberRecordText(op, record);
      return this.journal.append([{ kind: 'op', op, plain: own.payload }]).then(() => op);
    });
    this.lastDurable = durable.catch(() => undefined);
    let op: OpRecord;
    try {
      op = await durable;
    } catch (error) {
      throw this.fail(error);
    }
    this.chainHeads.set(this.deps.device, { seq: op.seq, op_id: op.op_id, hlc: op.hlc });
    this.fold.applyValid(foldInput(op, own.payload));
    this.changed.add(op.surface);
    return op;
  }

  /** Resolves once every own op handed to the minter is durable (or failed). */
  durable(): Promise<unknown> {
    return this.lastDurable;
  }

  /** Journals verified remote ops durably, then folds them. Returns how many were folded. */
  async accept(entries: readonly OpEntry[]): Promise<number> {
    await this.journal.append(entries).catch((error: unknown) => {
      throw this.fail(error);
    });
    let folded = 0;
    for (const entry of entries) {
      const { op } = entry;
      this.chainHeads.set(op.device_id, { seq: op.seq, op_id: op.op_id, hlc: op.hlc });
      this.clock.observe(op.hlc);
      if (entry.plain) {
        this.fold.apply(foldInput(op, entry.plain));
        this.changed.add(op.surface);
        folded++;
      } else {
        tryOpen(op, this.heldOps, this.deps.keyring);
      }
    }
    return folded;
  }

  /** Gives the minter an imported scope key (held ops it opens are folded by `openHeld`). */
  addKey(key: ScopeKey): void {
    this.minter.addKey(key);
  }

  /**
   * Folds held ops that a newly imported key opens (proposals/envelope.md §Keys). Their journal
   * entries keep `plain: null`; a restart decrypts them again while loading.
   */
  async openHeld(): Promise<number> {
    if (this.heldOps.size === 0) return 0;
    const waiting = new Set(this.heldOps.keys());
    let folded = 0;
    await this.journal.replay((entry) => {
      if (entry.kind !== 'op' || !waiting.has(entry.op.op_id)) return;
      const plain = tryOpen(entry.op, this.heldOps, this.deps.keyring);
      if (plain) {
        this.fold.apply(foldInput(entry.op, plain));
        this.changed.add(entry.op.surface);
        folded++;
      }
    });
    return folded;
  }

  /** The surfaces folded into since the last call, sorted; and forgets them. */
  takeChanged(): Surface[] {
    const surfaces = [...this.changed].sort(compareStrings);
    this.changed.clear();
    return surfaces;
  }

  /** Own ops in the journal that `wanted` picks, in seq order. */
  async ownOps(wanted: (op: OpRecord) => boolean): Promise<OpRecord[]> {
    const ops: OpRecord[] = [];
    await this.journal.replay((entry) => {
      if (entry.kind === 'op' && entry.op.device_id === this.deps.device && wanted(entry.op)) ops.push(entry.op);
    });
    return ops;
  }

  /** The journal's op entries `wanted` picks, in journal order. */
  async entries(wanted: (entry: OpEntry) => boolean): Promise<OpEntry[]> {
    const kept: OpEntry[] = [];
    await this.journal.replay((entry) => {
      if (entry.kind === 'op' && wanted(entry)) kept.push(entry);
    });
    return kept;
  }

  /**
   * The state of exactly the ops at or below `cut` (per device, a seq), from `base` (the base
   * checkpoint's state and heads) and the journal: with the frontier of heads it names, the ops
   * above it (plaintext), and the newest own op the journal held (to tell whether appends landed
   * meanwhile).
   */
  async foldCut(cut: ReadonlyMap<DeviceId, number>, base: { state: FoldState; frontier: Frontier } | null): Promise<Cut> {
    const state = base?.state ?? new FoldState(this.deps.crypto);
    const frontier = new Map<DeviceId, ChainHead>();
    for (const [device, seq] of cut) {
      const baseHead = base?.frontier.get(device);
      if (baseHead?.seq === seq) frontier.set(device, baseHead);
    }
    const above: FoldOp[] = [];
    let ownSeen = -1;
    await this.journal.replay((entry) => {
      if (entry.kind === 'base') ownSeen = entry.frontier.get(this.deps.device)?.seq ?? -1;
      if (entry.kind !== 'op') return;
      const { op } = entry;
      if (op.device_id === this.deps.device) ownSeen = op.seq;
      const plain = entry.plain ?? tryOpen(op, this.heldOps, this.deps.keyring);
      const limit = cut.get(op.device_id) ?? -1;
      if (op.seq > limit) {
        if (plain) above.push(foldInput(op, plain));
        return;
      }
      if (op.seq === limit) frontier.set(op.device_id, { seq: op.seq, op_id: op.op_id, hlc: op.hlc });
      if (plain) state.apply(foldInput(op, plain));
    });
    return { state, frontier, above, ownSeen };
  }

  /** Rewrites the journal as `head` plus the entries `keep` picks (compaction, rebase); memory stays as it is. */
  rewrite(head: readonly JournalEntry[], keep: (entry: JournalEntry) => boolean, step?: ProgressStep): Promise<void> {
    const { progress } = this.deps;
    return this.journal.rewrite({ head, keep, progress: step && progress ? (done, total) => progress(step, done, total) : undefined });
  }

  /**
   * After the journal was rewritten onto a new base: the state becomes the base's `state` plus
   * `kept` (the entries above it), and the heads those entries reach. Nothing may fail between
   * the rewrite and this, or a later checkpoint would be cut from a stale base.
   */
  foldOnto(state: FoldState, kept: readonly OpEntry[], heads?: ReadonlyMap<DeviceId, ChainHead>, frontier?: Frontier): void {
    this.fold = state;
    if (heads) {
      this.chainHeads.clear();
      this.heldOps.clear();
      for (const [device, head] of heads) this.chainHeads.set(device, head);
    }
    for (const entry of kept) {
      foldEntry(entry, this.fold, this.heldOps, this.deps.keyring);
      this.changed.add(entry.op.surface);
    }
    for (const head of frontier?.values() ?? []) this.clock.observe(head.hlc);
  }

  /** Empties the journal and the state: a device that wrote nothing starts over from the relay. */
  async startOver(): Promise<void> {
    await this.journal.rewrite({ head: [], keep: () => false });
    this.foldOnto(new FoldState(this.deps.crypto), [], new Map());
  }

  /** Re-reads the whole journal and checks chains, op ids, signatures and cached plaintexts against `keys`. */
  async audit(keys: ReadonlyMap<DeviceId, string>): Promise<VerifyReport> {
    await this.lastDurable;
    const { journalLocation: location, keyring, crypto } = this.deps;
    return auditJournal(this.journal, { location, keyring, crypto, keys });
  }

  /** A failed journal write leaves the file's state unknown: stop accepting work (proposals/session.md §Journal failure). */
  fail(error: unknown): OpsyncError {
    if (this.failed) return this.failed;
    this.failed = isOpsyncError(error) ? error : new OpsyncError('journal_failed', `The journal failed: ${(error as Error).message}.`);
    this.deps.log?.warn({ err: error }, 'the session stopped accepting work');
    return this.failed;
  }

  async close(): Promise<void> {
    await this.lastDurable;
    await this.minter.close();
    await this.journal.close();
  }
}

type Held = Map<OpId, { readonly device: DeviceId; readonly seq: number; readonly kid: string | null }>;

function foldEntry(entry: OpEntry, fold: FoldState, held: Held, keyring: Keyring): void {
  const plain = entry.plain ?? tryOpen(entry.op, held, keyring);
  if (plain) fold.apply(foldInput(entry.op, plain));
}

/** Opens an op's payload if a key for it is here (and it is no longer held); otherwise records it as held. */
function tryOpen(op: OpRecord, held: Held, keyring: Keyring): JsonObject | null {
  const opened = openPayload(keyring, op.payload, op);
  if (opened.ok) {
    held.delete(op.op_id);
    return opened.payload;
  }
  held.set(op.op_id, { device: op.device_id, seq: op.seq, kid: opened.kid });
  return null;
}

function foldInput(op: OpRecord, plain: JsonObject): FoldOp {
  return { op_id: op.op_id, device_id: op.device_id, hlc: op.hlc, scope: op.scope, surface: op.surface, payload: plain };
}

function later(a: Hlc | null, b: Hlc): Hlc {
  return a === null || compareHlc(b, a) > 0 ? b : a;
}
