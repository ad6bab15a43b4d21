import { anchorTail } from '../checkpoint/anchor.js';
import type { DeviceKey } from '../crypto/device-key.js';
import { openPayload } from '../crypto/envelope.js';
import { inlineMinter, type MinterStart, type OpMinter } from '../crypto/op-minter.js';
import type { ScopeKey } from '../crypto/scope-key.js';
import type { Keyring } from '../crypto/keyring.js';
import type { FoldOp } from '../fold/fold-op.js';
import { FoldState } from '../fold/fold-state.js';
import { payloadProblem } from '../fold/payload-rules.js';
import type { BaseEntry, Journal, JournalEntry, JournalVisitor, OpEntry } from '../journal/journal.js';
import { JournalVerifier } from '../journal/journal-verifier.js';
import { canonicalize } from '../oplog/canonical.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import { frontierToJson, parseFrontier, seqFrontierToJson, seqsOf, type Frontier } from '../oplog/frontier.js';
import { compareHlc, HlcClock, type Hlc } from '../oplog/hlc.js';
import type { DeviceId, OpId } from '../oplog/ids.js';
import { rememberRecordText, type ChainHead, type OpRecord } from '../oplog/op-record.js';
import { isOpsyncError, OpsyncError, type ErrorCode } from '../oplog/opsync-error.js';
import type { JsonObject } from '../util/json.js';
import { groupBy } from '../util/group.js';
import { LIMITS } from '../util/limits.js';
import { Gate, Serializer } from '../util/serial.js';
import { checkpointFileBytes } from '../../relay/checkpoint-files.js';
import type { CheckpointHeaderJson, Covering, Relay, RosterView } from '../../relay/relay.js';
import { BaseCheckpoints } from './base-checkpoints.js';
import type { CheckpointHeader } from '../checkpoint/checkpoint.js';
import { CheckpointAuthority } from './checkpoint-auth.js';
import { cutCheckpoint, DAMAGED_CHECKPOINT, type Publisher } from './checkpoint-seal.js';
import type { CheckpointStore } from './checkpoint-store.js';
import { intake, type Quarantined, type Rejection, type RejectionKind } from './intake.js';
import { auditJournal } from './journal-audit.js';
import { LivePumps } from './live-pumps.js';
import { RelayMending } from './relay-mending.js';
import type { SessionLog } from './session-log.js';
import type {
  AppendInput,
  AppendResult,
  ChangeEvent,
  CheckpointReport,
  CompactReport,
  PumpReport,
  RebaseReport,
  SessionStatus,
  VerifyReport,
} from './session-reports.js';
import { SessionStats } from './session-stats.js';

export interface SessionOptions {
  /** Remote ops stamped further than this ahead of local wall time are quarantined (proposals/op-record.md §HLC). */
  readonly maxSkewMs: number;
  /** Ops per pull page. */
  readonly pullPageSize: number;
  /** Ops per push (a long offline stretch pushes in several segments). */
  readonly pushBatchSize: number;
  /** Delay between a local append and the push it triggers, so a burst goes out together. */
  readonly pushDebounceMs: number;
  /** Safety-net pump interval when live; the watcher does the real work. */
  readonly periodicPumpMs: number;
  /**
   * When live, publish a checkpoint and compact once this many new ops arrived and a pump finds
   * nothing to do with no append since the previous pump (so the work never competes with a
   * burst), or regardless once OVERDUE times as many arrived; 0: never automatically.
   */
  readonly autoCheckpointOps: number;
  /**
   * Least time between two acks: acks only move the stable frontier (GC, checkpoints), so
   * writing one per pump would cost a file write for nothing.
   */
  readonly ackIntervalMs: number;
  /** Least time between two roster reads in pumps (keys rarely change; an unknown device forces a read). */
  readonly rosterRefreshMs: number;
  /**
   * A pump checks at least this often that the relay still holds every op this device pushed,
   * and pushes again what it lacks: a relay restored from an older backup does not say.
   */
  readonly relayCheckMs: number;
}

/** A device that is never quiet still checkpoints after this many times `autoCheckpointOps` new ops. */
const OVERDUE = 4;
/** While a checkpoint is due but appends go on, pump again after this long to see whether they stopped. */
const QUIET_CHECK_MS = 500;
/** After automatic maintenance could not publish a checkpoint, the least wait before it tries again. */
const MAINTENANCE_RETRY_MS = 5_000;

export const DEFAULT_SESSION_OPTIONS: SessionOptions = {
  maxSkewMs: 60_000,
  pullPageSize: 5_000,
  pushBatchSize: 10_000,
  pushDebounceMs: 2,
  periodicPumpMs: 30_000,
  autoCheckpointOps: 50_000,
  ackIntervalMs: 250,
  rosterRefreshMs: 1_000,
  relayCheckMs: 10_000,
};

export type { SessionLog };

export interface SessionDeps {
  readonly device: DeviceId;
  readonly deviceKey: DeviceKey;
  readonly keyring: Keyring;
  readonly crypto: CoreCrypto;
  readonly relay: Relay;
  readonly checkpoints: CheckpointStore;
  /** Wall clock (ms); injected so simulations control time. */
  readonly now: () => number;
  /** Where the journal lives, for messages. */
  readonly journalLocation: string;
  readonly openJournal: (visit: JournalVisitor) => Promise<Journal>;
  /** Builds the op minter once the chain head is known (default: inline, in this thread). */
  readonly createMinter?: (start: MinterStart) => OpMinter;
  readonly log?: SessionLog;
  readonly options?: Partial<SessionOptions>;
}

/** A checkpoint a new device cannot start from: damaged, gone, or sealed with a key it lacks. */
const UNUSABLE_CHECKPOINT: ReadonlySet<ErrorCode> = new Set([
  ...DAMAGED_CHECKPOINT,
  'checkpoint_not_found',
  'checkpoint_unauthenticated',
  'key_missing',
]);

/** Acks are re-sent at least this often so the device stays "seen" even when nothing changes. */
const ACK_REFRESH_MS = 60_000;
const RECENT_REJECTIONS = 16;

/**
 * One device's sync engine (proposals/session.md): appends, the pump, checkpoints, compaction and rebase
 * over a journal and a relay. The daemon puts it behind JSON-RPC; tests and the simulation
 * drive it directly.
 *
 * Invariants:
 * - an append resolves only once its op is journal-durable; own ops are durable before pushed;
 * - a pump journals remote ops durably before it folds or acks them, and acks nothing else;
 * - verification (chain, run-head signature, skew) happens before anything is journaled;
 * - the journal is rewritten (compaction, rebase) only while appends wait at the gate.
 */
export class Session {
  readonly device: DeviceId;
  readonly stats = new SessionStats();
  private readonly options: SessionOptions;
  private journal!: Journal;
  private fold: FoldState;
  private clock!: HlcClock;
  /** Per device, the newest op durable in the journal (own device included). */
  private readonly heads = new Map<DeviceId, ChainHead>();
  /** The newest own op durable in the journal. */
  private ownHead: ChainHead | null = null;
  /** The seq of the newest own op handed to the minter (it may still be on its way to the journal). */
  private ownSeq = -1;
  private minter!: OpMinter;
  private unpushed: OpRecord[] = [];
  private readonly held = new Map<OpId, { device: DeviceId; seq: number; kid: string | null }>();
  private quarantine: Quarantined[] = [];
  private readonly rejectedCounts = new Map<RejectionKind, number>();
  private readonly recentRejections: Rejection[] = [];
  private roster: RosterView | null = null;
  private rosterReadAt = 0;
  /** Registered public keys by device, from the roster. */
  private readonly keys = new Map<DeviceId, string>();
  private lastAck: { frontier: Map<DeviceId, number>; atMs: number } | null = null;
  private readonly serial = new Serializer();
  private readonly gate = new Gate();
  private appendQueue: Promise<unknown> = Promise.resolve();
  private lastDurable: Promise<unknown> = Promise.resolve();
  private failure: OpsyncError | null = null;
  private closed = false;
  private lastError: string | null = null;
  /** The relay forgot this device (it was re-created or reset): it may lack this device's ops too. */
  private relayForgot = false;
  /** Wall time (`deps.now`) of the last check that the relay holds this device's ops (`refillRelay`). */
  private relayCheckedAt = -Infinity;
  /**
   * Set when the relay could not be reached at start: this device works from its journal, and
   * the first pump, checkpoint, compaction or rebase that reaches the relay registers it and
   * makes the clone check against the journal's head at start (`seq`) (`ensureContact`).
   */
  private uncontacted: { readonly seq: number } | null = null;
  /** Mends what the relay lost or damaged of this device's ops and checkpoints. */
  private readonly mending: RelayMending;
  /** The checkpoints this device depends on, and their local copies. */
  private readonly bases: BaseCheckpoints;
  /** Which checkpoints on the relay this device trusts (proposals/checkpoint.md §Authentication). */
  private readonly authority: CheckpointAuthority;
  private readonly publisher: Publisher;
  private readonly livePumps: LivePumps;
  private readonly listeners = new Set<(event: ChangeEvent) => void>();
  private opsSinceCheckpoint = 0;
  /** `ownSeq` when the previous background pump ended: a burst of appends defers maintenance. */
  private ownSeqAtLastPump = -1;
  /** Wall time (`deps.now`) before which automatic maintenance is not retried after it could not publish. */
  private maintenanceRetryAt = 0;

  private constructor(private readonly deps: SessionDeps) {
    this.device = deps.device;
    this.options = { ...DEFAULT_SESSION_OPTIONS, ...deps.options };
    this.fold = new FoldState(deps.crypto);
    this.publisher = { device: deps.device, deviceKey: deps.deviceKey, keyring: deps.keyring, crypto: deps.crypto };
    this.authority = new CheckpointAuthority(deps.keyring, deps.crypto, (device) =>
      device === this.device ? deps.deviceKey.publicKey : (this.keys.get(device) ?? null),
    );
    const { authentic } = this.authority;
    // A publisher the roster read last did not show yet: the roster is read again, once.
    const trust = async (header: CheckpointHeader): Promise<string | null> => {
      this.authority.unknownPublisher = false;
      const problem = this.authority.problem(header);
      if (problem === null || !this.authority.unknownPublisher) return problem;
      await this.refreshRoster(true);
      return this.authority.problem(header);
    };
    this.bases = new BaseCheckpoints({
      relay: deps.relay,
      store: deps.checkpoints,
      publisher: this.publisher,
      trust,
      authentic,
      log: deps.log,
    });
    this.livePumps = new LivePumps({
      relay: deps.relay,
      serial: this.serial,
      pump: async () => this.maintainWhenDue(await this.pumpLocked()),
      usable: () => !this.closed && !this.failure,
      failed: (message) => (this.lastError = message),
      periodicPumpMs: this.options.periodicPumpMs,
      pushDebounceMs: this.options.pushDebounceMs,
      log: deps.log,
    });
    this.mending = new RelayMending({
      device: deps.device,
      relay: deps.relay,
      checkpoints: deps.checkpoints,
      keyring: deps.keyring,
      crypto: deps.crypto,
      trust,
      authentic,
      log: deps.log,
      base: () => this.bases.current,
      mergedWithLatest: async () => {
        const merged = await this.bases.mergedWithLatest();
        if (merged) this.stats.counters.checkpoints_merged++;
        return merged;
      },
      ownOps: async (wanted) => {
        const ops: OpRecord[] = [];
        await this.journal.replay((entry) => {
          if (entry.kind === 'op' && entry.op.device_id === this.device && wanted(entry.op)) ops.push(entry.op);
        });
        return ops;
      },
      requeue: (from, ops) => {
        const newest = ops.at(-1)?.seq ?? from - 1;
        this.unpushed = [...ops, ...this.unpushed.filter((op) => op.seq > newest)];
      },
      known: (write) => this.known(write),
    });
  }

  /**
   * Opens the session: registers with the relay, replays and verifies the journal, loads its
   * base checkpoint, refuses a cloned device, and bootstraps an empty device from the relay's
   * latest checkpoint when there is one. A relay that cannot be reached does not keep the device
   * from working: it opens from its journal, and registers and checks for a clone once a pump
   * reaches the relay (proposals/session.md §Starting offline).
   */
  static async open(deps: SessionDeps): Promise<Session> {
    const session = new Session(deps);
    await session.load();
    return session;
  }

  /** The folded state (replaced wholesale by a rebase; read it through this getter). */
  get state(): FoldState {
    return this.fold;
  }

  onChange(listener: (event: ChangeEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async append(input: AppendInput): Promise<AppendResult> {
    this.assertUsable();
    const started = performance.now();
    const { surface, payload, scope } = input;
    const problem = payloadProblem(surface, scope, payload);
    if (problem !== null)
      throw new OpsyncError('invalid_payload', `The ${surface} payload cannot be appended: ${problem}.`, { surface, reason: problem });
    const plainText = canonicalize(payload);
    const size = Buffer.byteLength(plainText);
    if (size > LIMITS.maxPayloadBytes) {
      throw new OpsyncError(
        'payload_too_large',
        `The ${surface} payload is ${size} bytes of canonical JSON; the limit is ${LIMITS.maxPayloadBytes}.`,
        { bytes: size, limit: LIMITS.maxPayloadBytes },
      );
    }
    if (!this.deps.keyring.forScope(scope)) {
      throw new OpsyncError('key_missing', `This device holds no key for scope ${JSON.stringify(scope)}; import one first.`, {
        scope: JSON.stringify(scope),
      });
    }
    if (this.bases.needsCopy) await this.baseCopied();
    await this.gate.pass();
    this.assertUsable();
    const seq = ++this.ownSeq;
    const minted = this.minter.mint({ seq, hlc: this.clock.tick(), scope, surface, plainText });
    // The minter answers in request order, so ops reach the journal in seq order.
    const queued = this.appendQueue.then(async () => {
      const { op, record } = await minted;
      rememberRecordText(op, record);
      return { op, durable: this.journal.append([{ kind: 'op', op, plain: payload }]) };
    });
    this.appendQueue = queued.catch(() => undefined);
    let op: OpRecord;
    try {
      const entry = await queued;
      op = entry.op;
      this.lastDurable = entry.durable.catch(() => undefined);
      await entry.durable;
    } catch (error) {
      throw this.fail(error);
    }
    const { op_id, hlc } = op;
    this.ownHead = { seq, op_id, hlc };
    this.heads.set(this.device, this.ownHead);
    this.fold.applyValid(foldInput(op, payload));
    this.unpushed.push(op);
    this.stats.counters.appends++;
    this.stats.record('append', performance.now() - started);
    this.opsSinceCheckpoint++;
    this.livePumps.afterAppend();
    return { op_id, seq, hlc };
  }

  /** Adds an imported scope key and folds the held ops it opens. Returns how many were folded. */
  async importKey(key: ScopeKey): Promise<number> {
    this.assertUsable();
    this.minter.addKey(key);
    return this.openHeld();
  }

  /** One pump round (proposals/session.md §Pump): durable → push → pull → verify → journal → fold → ack. */
  pump(): Promise<PumpReport> {
    return this.locked(() => this.pumpLocked(true));
  }

  /** Publishes a checkpoint of the state at the stable frontier. */
  checkpoint(): Promise<CheckpointReport> {
    return this.locked(() => this.checkpointLocked());
  }

  /** Compacts the journal behind the relay's latest checkpoint and collects this device's relay ops. */
  compact(): Promise<CompactReport> {
    return this.locked(() => this.compactLocked());
  }

  /**
   * Before an own op goes into a journal whose base has no local copy yet (a bootstrap whose
   * copy is still being written, or failed): makes the copy. A device holding own ops above a
   * base found nowhere could not start again, while one that wrote nothing can start over — and
   * does, when the relay lost that checkpoint meanwhile: it moves onto the relay's latest one, or
   * starts from the ops.
   */
  private async baseCopied(): Promise<void> {
    const attempt = () =>
      this.bases.ensureCopied().then(
        () => null,
        (error: unknown) => error,
      );
    let failure = await attempt();
    if (failure !== null && isOpsyncError(failure) && failure.code === 'checkpoint_not_found' && this.ownSeq === -1) {
      const gone = failure;
      await this.locked(async () => {
        if (this.bases.needsCopy && !(await this.rebaseLocked()).rebased) await this.startOver(gone);
      });
      failure = await attempt();
    }
    if (failure === null) return;
    const base = this.bases.current?.hash ?? 'none';
    throw new OpsyncError(
      isOpsyncError(failure) ? failure.code : 'relay_unavailable',
      `This device writes no op until it holds a copy of checkpoint ${base}, which its journal is based on: ${(failure as Error).message}`,
      { checkpoint_hash: base },
    );
  }

  /** Rebases onto the relay's latest checkpoint, keeping own ops it does not cover. */
  rebase(): Promise<RebaseReport> {
    return this.locked(() => this.rebaseLocked());
  }

  /**
   * Folds held ops that a newly imported key opens (proposals/envelope.md §Keys). Returns how many were folded.
   * Their journal entries keep `plain: null`; a restart decrypts them again while loading.
   */
  openHeld(): Promise<number> {
    return this.locked(async () => {
      if (this.held.size === 0) return 0;
      const waiting = new Set(this.held.keys());
      let folded = 0;
      await this.journal.replay((entry) => {
        if (entry.kind !== 'op' || !waiting.has(entry.op.op_id)) return;
        const plain = this.tryOpen(entry.op);
        if (plain) {
          this.fold.apply(foldInput(entry.op, plain));
          folded++;
        }
      });
      if (folded > 0) for (const listener of this.listeners) listener({ folded, state_hash: this.fold.stateHash(), rebased: false });
      return folded;
    });
  }

  /** Re-reads the whole journal and checks chains, op ids, signatures and cached plaintexts. */
  verify(): Promise<VerifyReport> {
    return this.locked(async () => {
      await this.lastDurable;
      const keys = new Map((this.roster ?? (await this.deps.relay.roster())).entries.map((e) => [e.device_id, e.public_key]));
      keys.set(this.device, this.deps.deviceKey.publicKey);
      const { journalLocation: location, keyring, crypto } = this.deps;
      return auditJournal(this.journal, { location, keyring, crypto, keys });
    });
  }

  status(): SessionStatus {
    const roster = this.roster;
    const journalFrontier = seqFrontierToJson(new Map([...this.heads].map(([d, h]) => [d, h.seq])));
    const anomalies = this.deps.relay.anomalies();
    return {
      device_id: this.device,
      state_hash: this.fold.stateHash(),
      journal_frontier: journalFrontier,
      stable_frontier: roster ? seqFrontierToJson(roster.stable) : {},
      base_checkpoint: this.bases.current?.hash ?? null,
      roster: (roster?.entries ?? []).map((entry) => ({
        device_id: entry.device_id,
        status: entry.status,
        last_seen_ms: entry.last_seen_ms,
        acked: seqFrontierToJson(entry.acked),
        lag: [...this.heads].reduce((lag, [device, head]) => lag + Math.max(0, head.seq - (entry.acked.get(device) ?? -1)), 0),
      })),
      counts: {
        records: this.fold.recordCount,
        unpushed: this.unpushed.length,
        quarantined: this.quarantine.length,
        undecryptable: this.held.size,
        skipped_payloads: this.fold.skipped.count,
        rejected: Object.fromEntries(this.rejectedCounts),
        ignored_relay_files: {
          ...anomalies,
          ...(this.authority.refused.size > 0 ? { checkpoint_unauthenticated: this.authority.refused.size } : {}),
        },
      },
      quarantine: this.quarantine,
      undecryptable_kids: [...new Set([...this.held.values()].map((h) => h.kid ?? 'malformed'))].sort(),
      last_error: this.failure?.message ?? this.lastError,
      clock_ahead_ms: this.clock.aheadOfWall(),
    };
  }

  recentRejectionList(): readonly Rejection[] {
    return this.recentRejections;
  }

  /** Live sync (`LivePumps`): pumps when another device writes, after appends, and periodically. */
  startLive(): Promise<void> {
    return this.livePumps.start();
  }

  /** Resolves once background work (a local copy of an adopted checkpoint) has finished. */
  async settled(): Promise<void> {
    await this.serial.idle();
    await this.bases.settled();
  }

  /** Stops live sync, waits for queued work and the journal, and closes the journal. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.livePumps.stop();
    await this.serial.idle();
    await this.lastDurable;
    await this.serial.run(() => this.finalAck());
    this.bases.copyLater();
    await this.bases.settled();
    await this.minter.close();
    await this.journal.close();
  }

  // ---- loading ----------------------------------------------------------------------------

  private async load(): Promise<void> {
    const relayHead = await this.contact().catch((error: unknown) => {
      if (!isOpsyncError(error) || error.code !== 'relay_unavailable') throw error;
      this.lastError = error.message;
      return null;
    });
    const verifier = new JournalVerifier(this.deps.journalLocation);
    let base: BaseEntry | null = null;
    const tail: OpEntry[] = [];
    let latest: Hlc | null = null;
    this.journal = await this.deps.openJournal((entry, line) => {
      verifier.check(entry, line);
      if (entry.kind === 'base') {
        base = entry;
        for (const head of entry.frontier.values()) latest = later(latest, head.hlc);
        return;
      }
      latest = later(latest, entry.op.hlc);
      if (entry.op.device_id === this.device && entry.op.seq > (relayHead ?? -1)) this.unpushed.push(entry.op);
      if (base) tail.push(entry);
      else this.foldEntry(entry);
    });
    try {
      for (const [device, head] of verifier.heads) this.heads.set(device, head);
      this.ownHead = this.heads.get(this.device) ?? null;
      this.ownSeq = this.ownHead?.seq ?? -1;
      this.clock = new HlcClock(this.device, this.deps.now, latest ?? undefined);
      const ahead = this.clock.aheadOfWall();
      if (ahead > this.options.maxSkewMs) {
        this.deps.log?.warn(
          { clock_ahead_ms: ahead },
          "this device's stamps run ahead of its clock (it was set ahead once): peers quarantine its new ops until their clocks get there",
        );
      }
      this.minter = (this.deps.createMinter ?? inlineMinter)({
        device: this.device,
        deviceKey: this.deps.deviceKey,
        keyring: this.deps.keyring,
        prev: this.ownHead?.op_id ?? null,
        crypto: this.deps.crypto,
      });
      await this.minter.ready();
      const found = base as BaseEntry | null;
      if (found) {
        const loaded = await this.bases.load(found.checkpoint_hash).catch((error: unknown) => {
          if (isOpsyncError(error) && error.code === 'checkpoint_not_found') return error;
          throw error;
        });
        if (loaded instanceof OpsyncError) {
          await this.rebaseOntoNewer(loaded);
        } else {
          this.fold = loaded.state;
          this.bases.current = { hash: found.checkpoint_hash, frontier: found.frontier };
          this.bases.copyLater(); // when the copy was missing or damaged
          for (const entry of tail) this.foldEntry(entry);
        }
      }
      await this.bases.prune(true);
      if (relayHead === null) {
        this.uncontacted = { seq: this.ownSeq };
        this.deps.log?.warn(
          { err: this.lastError },
          'the relay cannot be reached: this device works from its journal and syncs once the relay is back',
        );
      } else {
        this.assertNotCloned(relayHead, this.ownSeq);
        if (verifier.ops === 0 && !found && (await this.latestCheckpoint())) await this.bootstrap();
      }
    } catch (error) {
      await this.minter?.close();
      await this.journal.close();
      throw error;
    }
  }

  /**
   * The journal's base checkpoint is gone — from this data directory (a crash before the copy
   * was made, or a lost copy) and from the relay (collected after two newer ones). The relay's
   * latest checkpoint stands in for it when the journal's ops continue it: the device rebases
   * onto it (rebase checks that every kept op is anchored); otherwise `missing` is the answer.
   */
  private async rebaseOntoNewer(missing: OpsyncError): Promise<void> {
    const report = await this.rebaseLocked().catch((error: unknown) => {
      // Out of reach is not gone: a start that cannot reach the relay fails and tries again later.
      const unreachable = isOpsyncError(error) && error.code === 'relay_unavailable';
      if (this.ownSeq === -1 && !unreachable) return null;
      // Named as the relay being out of reach, so that whoever starts the device knows to try again.
      throw new OpsyncError(
        unreachable ? 'relay_unavailable' : missing.code,
        `${missing.message} The relay's latest checkpoint cannot stand in for it either: ${(error as Error).message}`,
        missing.data,
      );
    });
    if (report?.rebased) {
      this.deps.log?.warn(
        { missing: missing.data, base_checkpoint: report.base_checkpoint },
        "this device's base checkpoint is gone; rebased onto the relay's latest",
      );
      return;
    }
    if (this.ownSeq !== -1) throw missing;
    await this.startOver(missing);
  }

  /**
   * A device that never wrote an op and whose base checkpoint is gone (a bootstrap cut short,
   * then the relay lost the checkpoint) holds nothing of its own: it starts over from the relay.
   */
  private async startOver(missing: OpsyncError): Promise<void> {
    await this.journal.rewrite({ head: [], keep: () => false });
    this.fold = new FoldState(this.deps.crypto);
    this.heads.clear();
    this.held.clear();
    this.bases.rebased(null, true);
    this.deps.log?.warn(
      { missing: missing.data },
      "this device's base checkpoint is gone and it never wrote an op: it starts over from the relay",
    );
    if (await this.latestCheckpoint()) await this.bootstrap();
  }

  /**
   * A new device starts from the relay's latest checkpoint. When that cannot be used (damaged,
   * gone, or sealed with a key this device lacks), it starts from the ops instead: the relay may
   * still hold them all, and if it does not, the first pump says why.
   */
  private async bootstrap(): Promise<void> {
    try {
      // Its local copy is written in the background, so as not to slow the start: its first own
      // op waits for it (a device that wrote nothing starts over if the copy never came to be).
      await this.rebaseLocked(false);
      this.bases.copyLater();
    } catch (error) {
      if (!isOpsyncError(error) || !UNUSABLE_CHECKPOINT.has(error.code)) throw error;
      this.lastError = error.message;
      this.deps.log?.warn({ err: error }, "the relay's latest checkpoint cannot be used; syncing from the ops instead");
    }
  }

  private foldEntry(entry: OpEntry): void {
    const plain = entry.plain ?? this.tryOpen(entry.op);
    if (plain) this.fold.apply(foldInput(entry.op, plain));
  }

  /** Opens a held op if a key for it has arrived; otherwise records it as held. */
  private tryOpen(op: OpRecord): JsonObject | null {
    const opened = openPayload(this.deps.keyring, op.payload, op);
    if (opened.ok) {
      this.held.delete(op.op_id);
      return opened.payload;
    }
    this.held.set(op.op_id, { device: op.device_id, seq: op.seq, kid: opened.kid });
    return null;
  }

  /** Registers this device with the relay; answers the relay's head of this device's ops. */
  private async contact(): Promise<number> {
    await this.deps.relay.register(this.deps.deviceKey.publicKey);
    return this.deps.relay.head(this.device);
  }

  /**
   * Before anything else that uses the relay (a pump, checkpoint, compaction or rebase) once it
   * could not be reached at start: registers, and checks for a clone against the journal's head
   * at start (ops appended since were never pushed, so the relay cannot hold them). A clone
   * stops the session, as it would have refused to start. Ops the relay already holds leave
   * the push queue.
   */
  private async ensureContact(): Promise<void> {
    if (!this.uncontacted) return;
    const relayHead = await this.contact();
    try {
      this.assertNotCloned(relayHead, this.uncontacted.seq);
    } catch (error) {
      throw this.fail(error);
    }
    this.unpushed = this.unpushed.filter((op) => op.seq > relayHead);
    this.uncontacted = null;
    this.deps.log?.info({ relay_head: relayHead }, 'reached the relay');
  }

  /** `own`: this device's journal head when it could last have pushed (at start). */
  private assertNotCloned(relayHead: number, own: number): void {
    if (relayHead > own) {
      throw new OpsyncError(
        'device_cloned',
        `The relay holds ops of device ${this.device} up to seq ${relayHead}, but this data directory's journal ends at seq ${own}: ` +
          'it is a stale copy or a clone of another device. Start it with a new device id (and a fresh data directory).',
        { device_id: this.device, relay_head: relayHead, journal_head: own },
      );
    }
  }

  // ---- pump -------------------------------------------------------------------------------

  /** `eagerAck`: an explicit pump acks at once; background pumps throttle acks (`ackIntervalMs`). */
  private async pumpLocked(eagerAck = false): Promise<PumpReport> {
    const started = performance.now();
    try {
      // A checkpoint refused last time only because its publisher was not in the roster read then
      // (a relay refilled after it lost every device) is judged again on a fresh roster.
      if (this.authority.unknownPublisher) {
        this.authority.unknownPublisher = false;
        await this.refreshRoster(true);
      }
      const report = await this.pumpSteps(eagerAck);
      this.bases.copyLater();
      this.lastError = null;
      this.stats.counters.pumps++;
      this.stats.record('pump', performance.now() - started);
      return report;
    } catch (error) {
      this.stats.counters.pump_errors++;
      this.lastError = (error as Error).message;
      throw error;
    }
  }

  private async pumpSteps(eagerAck: boolean): Promise<PumpReport> {
    const { relay } = this.deps;
    await this.lastDurable;
    this.assertUsable();
    await this.ensureContact();
    let pushed = 0;
    let pushDeduped = 0;
    // After a failed pump, once the relay forgot this device, and every `relayCheckMs` anyway (a
    // relay restored from an older backup says nothing), it may hold fewer of this device's ops.
    let refilled = false;
    const now = this.deps.now();
    // A clock set back since the last check counts as due.
    const checkDue = !(now >= this.relayCheckedAt && now - this.relayCheckedAt < this.options.relayCheckMs);
    if (this.lastError !== null || this.relayForgot || checkDue) {
      await this.refillRelay();
      this.relayForgot = false;
      this.relayCheckedAt = now;
      refilled = true;
    }
    // Damaged ops of this device on the relay first: a push continues from the relay's copy.
    const repairs = await relay.repairs(this.authority.authentic);
    if (repairs.ops.length > 0) await this.mending.restoreRanges(repairs.ops);
    await this.mending.restoreCheckpoints(repairs.checkpoints);
    // Push what is durable now; ops appended meanwhile wait for the next pump, so a steady stream
    // of appends cannot keep a pump from pulling.
    for (let remaining = this.unpushed.length; remaining > 0;) {
      const batch = this.unpushed.slice(0, Math.min(remaining, this.options.pushBatchSize));
      let result;
      try {
        result = await this.known(() => relay.push(batch, this.authority.authentic));
      } catch (error) {
        if (!isOpsyncError(error) || error.code !== 'relay_gap' || refilled) throw error;
        await this.refillRelay();
        remaining = this.unpushed.length;
        refilled = true;
        continue;
      }
      remaining -= batch.length;
      this.unpushed.splice(0, batch.length);
      pushed += result.pushed;
      pushDeduped += result.deduped;
    }
    this.stats.counters.pushed += pushed;
    this.stats.counters.push_deduped += pushDeduped;

    await this.refreshRoster(false);
    const stalled = new Set<DeviceId>();
    const quarantine: Quarantined[] = [];
    let folded = 0;
    // Checkpoints this pump rebased onto. Another device may put a checkpoint on the relay (a
    // chain restart does) and move its floor between a rebase and the next pull: the pump then
    // rebases again onto the newer checkpoint, never twice onto the same one.
    const rebasedOnto = new Set<string>();
    for (;;) {
      const since = new Map<DeviceId, number>();
      for (const [device, head] of this.heads) if (device !== this.device) since.set(device, head.seq);
      for (const device of stalled) since.set(device, Number.MAX_SAFE_INTEGER);
      let page;
      try {
        page = await relay.pull(since, this.options.pullPageSize, this.authority.authentic);
      } catch (error) {
        if (!isOpsyncError(error) || error.code !== 'relay_frontier_truncated') throw error;
        const latest = rebasedOnto.size > 0 ? await this.latestCheckpoint() : null;
        const why = latest && rebasedOnto.has(latest.checkpoint_hash) ? await this.mergeCovering(error, rebasedOnto) : null;
        const result = why ? { rebased: false, reason: why } : await this.rebaseLocked();
        if (!result.rebased)
          throw new OpsyncError(error.code, `${error.message} It cannot rebase: ${result.reason ?? 'no reason given'}.`, error.data);
        rebasedOnto.add(this.bases.current!.hash);
        continue;
      }
      if (page.ops.some((op) => !this.keys.has(op.device_id))) await this.refreshRoster(true);
      const result = intake(page.ops, {
        heads: this.heads,
        keys: this.keys,
        nowMs: this.deps.now(),
        maxSkewMs: this.options.maxSkewMs,
        crypto: this.deps.crypto,
        keyring: this.deps.keyring,
      });
      quarantine.push(...result.quarantined);
      for (const rejection of result.rejected) {
        this.reject(rejection);
        // The op as the relay serves it is damaged (or forged): a relay that can, asks its writer to restore it.
        if (rejection.kind !== 'unknown_device') await relay.reportDamage({ device: rejection.device_id, seq: rejection.seq });
      }
      const newlyStalled = [...result.stalled].filter((device) => !stalled.has(device));
      for (const device of newlyStalled) stalled.add(device);
      if (result.accepted.length > 0) folded += await this.accept(result.accepted);
      if (!page.more || (result.accepted.length === 0 && newlyStalled.length === 0)) break;
    }
    this.quarantine = quarantine;
    this.stats.counters.folded += folded;
    this.opsSinceCheckpoint += folded;
    const state_hash = this.fold.stateHash();
    // Subscribers hear of folded ops as soon as they are folded; the ack that follows only
    // tells the relay what this device durably holds.
    const rebased = rebasedOnto.size > 0;
    if (folded > 0 || rebased) for (const listener of this.listeners) listener({ folded, state_hash, rebased });
    const acked = await this.ackDurable(eagerAck);
    return { pushed, push_deduped: pushDeduped, folded, acked, state_hash, rebased };
  }

  /** Queues again, from the journal, own ops a relay that lost them no longer holds (`RelayMending.refill`). */
  private refillRelay(): Promise<void> {
    return this.mending.refill((this.unpushed[0]?.seq ?? (this.ownHead?.seq ?? -1) + 1) - 1);
  }

  /**
   * Reads the roster (registered keys, acks, stable frontier) unless it was read less than
   * `rosterRefreshMs` ago; `force` reads it regardless (an op from a device not yet known).
   */
  private async refreshRoster(force: boolean): Promise<void> {
    // Through the injected clock, as every decision is; a clock set back counts as due.
    const now = this.deps.now();
    const age = now - this.rosterReadAt;
    if (!force && this.roster && age >= 0 && age < this.options.rosterRefreshMs) return;
    this.roster = await this.deps.relay.roster();
    this.rosterReadAt = now;
    for (const entry of this.roster.entries) this.keys.set(entry.device_id, entry.public_key);
  }

  /** Journals verified remote ops durably, then folds them. Returns how many were folded. */
  private async accept(entries: readonly OpEntry[]): Promise<number> {
    await this.journal.append(entries).catch((error: unknown) => {
      throw this.fail(error);
    });
    let folded = 0;
    for (const entry of entries) {
      const { op } = entry;
      this.heads.set(op.device_id, { seq: op.seq, op_id: op.op_id, hlc: op.hlc });
      this.clock.observe(op.hlc);
      if (entry.plain) {
        this.fold.apply(foldInput(op, entry.plain));
        folded++;
      } else {
        this.tryOpen(op);
      }
    }
    this.stats.counters.pulled += entries.length;
    return folded;
  }

  /**
   * Acks every durably journaled op (folded, or held for a key). Returns how many are newly acked.
   * An ack held back by the throttle is sent by a trailing pump once the interval has passed, so
   * the stable frontier never waits for the slow periodic pump.
   */
  private async ackDurable(eager: boolean): Promise<number> {
    const frontier = new Map([...this.heads].map(([device, head]) => [device, head.seq]));
    const previous = this.lastAck?.frontier ?? new Map<DeviceId, number>();
    let newly = 0;
    for (const [device, seq] of frontier) newly += Math.max(0, seq - (previous.get(device) ?? -1));
    const now = this.deps.now();
    // A wall clock set back (NTP, a user) must not hold acks back until it gets there again.
    const since = this.lastAck && now >= this.lastAck.atMs ? now - this.lastAck.atMs : Infinity;
    const interval = newly === 0 ? ACK_REFRESH_MS : eager ? 0 : this.options.ackIntervalMs;
    if (since < interval) {
      if (newly > 0) this.livePumps.later(interval - since);
      return 0;
    }
    await this.known(() => this.deps.relay.ack(frontier));
    this.lastAck = { frontier, atMs: now };
    return newly;
  }

  /**
   * Runs a relay write; when the relay no longer knows this device (re-created, or a database
   * reset), registers the device again and retries once — and the next pump checks what the
   * relay still holds of this device's ops.
   */
  private async known<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (!isOpsyncError(error) || error.code !== 'relay_not_registered') throw error;
      await this.deps.relay.register(this.deps.deviceKey.publicKey);
      this.relayForgot = true;
      this.deps.log?.info({ relay: this.deps.relay.location }, 'the relay no longer knew this device; registered it again');
      return write();
    }
  }

  /** On close, acks what the throttle held back (best effort: the relay may be out of reach). */
  private async finalAck(): Promise<void> {
    if (!this.lastAck || [...this.heads].every(([device, head]) => this.lastAck!.frontier.get(device) === head.seq)) return;
    try {
      await this.deps.relay.ack(new Map([...this.heads].map(([device, head]) => [device, head.seq])));
    } catch (error) {
      this.deps.log?.warn({ err: error }, 'could not ack on close');
    }
  }

  private reject(rejection: Rejection): void {
    this.rejectedCounts.set(rejection.kind, (this.rejectedCounts.get(rejection.kind) ?? 0) + 1);
    this.recentRejections.push(rejection);
    if (this.recentRejections.length > RECENT_REJECTIONS) this.recentRejections.shift();
    this.deps.log?.warn({ rejection }, 'refused ops from the relay');
  }

  // ---- checkpoints, compaction, rebase ----------------------------------------------------

  private async checkpointLocked(): Promise<CheckpointReport> {
    await this.ensureContact();
    const roster = await this.deps.relay.roster();
    this.roster = roster;
    const cut = new Map([...roster.stable].filter(([, seq]) => seq >= 0));
    if (cut.size === 0) return { published: false, reason: 'no op is acked by every active device yet' };
    const base = this.bases.current;
    for (const [device, seq] of cut) {
      if ((this.heads.get(device)?.seq ?? -1) < seq)
        return { published: false, reason: `this device has not yet folded device ${device} up to seq ${seq}` };
      const baseSeq = base?.frontier.get(device)?.seq ?? -1;
      if (seq < baseSeq) return { published: false, reason: `the stable frontier for ${device} is behind this device's base checkpoint` };
    }
    const heldBelow = [...this.held.values()].find((h) => h.seq <= (cut.get(h.device) ?? -1));
    if (heldBelow)
      return {
        published: false,
        reason: `this device cannot decrypt op ${heldBelow.seq} of ${heldBelow.device} (key ${heldBelow.kid ?? 'unknown'})`,
      };
    if (base && [...cut].every(([device, seq]) => base.frontier.get(device)?.seq === seq) && cut.size === base.frontier.size) {
      return { published: false, reason: 'the stable frontier has not moved since the base checkpoint' };
    }

    const { state, frontier, above, ownSeen } = await this.foldCut(cut);
    const { header, file } = cutCheckpoint(state, frontier, this.publisher);
    // A checkpoint replaces history for every device that adopts it, so it is published only if
    // the cut plus the ops above it is exactly this device's state: memory that drifted from the
    // journal (a bug, or a journal changed under the running daemon) must not become everyone's.
    // Appends may land during the replay; the check runs when the replay saw exactly those in memory.
    if (ownSeen === (this.ownHead?.seq ?? -1)) {
      for (const op of above) state.apply(op);
      if (state.stateHash() !== this.fold.stateHash()) {
        const reason =
          "this device's state does not match its journal, so its checkpoint would lose or invent records; restart the daemon to rebuild the state from the journal";
        this.deps.log?.warn({ journal_state: state.stateHash(), memory_state: this.fold.stateHash() }, reason);
        return { published: false, reason };
      }
    }
    await this.deps.relay.putCheckpoint(file);
    await this.bases.keepPublished({ hash: header.checkpoint_hash, frontier }, checkpointFileBytes(file));
    this.stats.counters.checkpoints_published++;
    this.opsSinceCheckpoint = 0;
    this.deps.log?.info({ checkpoint_hash: header.checkpoint_hash, frontier: frontierToJson(frontier) }, 'published a checkpoint');
    return { published: true, checkpoint_hash: header.checkpoint_hash };
  }

  /**
   * The state of exactly the ops at or below `cut` (per device, a seq), from the base and the
   * journal: with the frontier of heads it names, the ops above it (plaintext), and the newest own
   * op the journal held (to tell whether appends landed meanwhile).
   */
  private async foldCut(
    cut: ReadonlyMap<DeviceId, number>,
  ): Promise<{ state: FoldState; frontier: Map<DeviceId, ChainHead>; above: FoldOp[]; ownSeen: number }> {
    const base = this.bases.current;
    const state = base ? (await this.bases.load(base.hash)).state : new FoldState(this.deps.crypto);
    const frontier = new Map<DeviceId, ChainHead>();
    for (const [device, seq] of cut) {
      const baseHead = base?.frontier.get(device);
      if (baseHead?.seq === seq) frontier.set(device, baseHead);
    }
    const above: FoldOp[] = [];
    let ownSeen = -1;
    await this.journal.replay((entry) => {
      if (entry.kind === 'base') ownSeen = entry.frontier.get(this.device)?.seq ?? -1;
      if (entry.kind !== 'op') return;
      const { op } = entry;
      if (op.device_id === this.device) ownSeen = op.seq;
      const plain = entry.plain ?? this.tryOpen(op);
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

  private async compactLocked(): Promise<CompactReport> {
    await this.ensureContact();
    const { relay } = this.deps;
    const header = await this.latestCheckpoint();
    if (!header) return { compacted: false, reason: 'the relay holds no checkpoint this device can authenticate' };
    const base = this.bases.current;
    if (header.checkpoint_hash === base?.hash) {
      const { droppedOps } = await relay.gc({ verified: base.frontier, authentic: this.authority.authentic });
      return {
        compacted: false,
        base_checkpoint: base.hash,
        relay_dropped_ops: droppedOps,
        reason: 'the journal is already based on the latest checkpoint',
      };
    }
    const behind = this.behindBase(header);
    if (behind) return { compacted: false, reason: behind };
    const hash = header.checkpoint_hash;
    // An authentic header names a frontier that parses; anything else is refused as damage.
    const frontier = this.bases.published?.hash === hash ? this.bases.published.frontier : parseFrontier(header.frontier);
    if (!frontier) return { compacted: false, reason: `checkpoint ${hash} names a malformed frontier` };
    for (const [device, head] of frontier) {
      if ((this.heads.get(device)?.seq ?? -1) < head.seq)
        return { compacted: false, reason: `this device has not yet folded device ${device} up to the checkpoint` };
    }
    const heldBelow = [...this.held.values()].find((h) => h.seq <= (frontier.get(h.device)?.seq ?? -1));
    if (heldBelow)
      return { compacted: false, reason: `this device holds an op of ${heldBelow.device} it cannot decrypt below the checkpoint` };
    // Another device's checkpoint is never trusted for the state it claims: this device compares it
    // with the state its own journal folds to at that frontier (proposals/checkpoint.md
    // §Compaction). The journal will name the checkpoint as its base, so a verified copy is made
    // first: a crash right after the rewrite still finds it here (the relay may collect it later).
    if (this.bases.published?.hash !== hash) {
      const mismatch = await this.mismatch(header, frontier);
      if (mismatch) return { compacted: false, reason: mismatch };
      await this.bases.copyVerified(hash);
    }
    await this.gate.hold(async () => {
      await this.lastDurable;
      await this.journal.rewrite({
        head: [{ kind: 'base', checkpoint_hash: hash, frontier }],
        keep: (entry) => entry.kind === 'op' && entry.op.seq > (frontier.get(entry.op.device_id)?.seq ?? -1),
      });
    });
    this.bases.rebased({ hash, frontier }, true);
    await this.bases.prune();
    // The relay collects only what every active device acked as well (the stable frontier).
    const { droppedOps } = await relay.gc({ verified: frontier, authentic: this.authority.authentic });
    this.stats.counters.compactions++;
    this.deps.log?.info({ checkpoint_hash: hash, relay_dropped_ops: droppedOps }, 'compacted the journal');
    return { compacted: true, base_checkpoint: hash, relay_dropped_ops: droppedOps };
  }

  /**
   * Why another device's checkpoint is not the state this device folds from its own journal at
   * that frontier, or null when it is: the same op at every device's head and the same state
   * hash. When this device holds nothing above the frontier, its state is that state already;
   * otherwise the base and the journal are folded up to the frontier (`foldCut`). A checkpoint
   * that would lose, invent or change a record is never compacted onto, whoever signed it.
   */
  private async mismatch(header: CheckpointHeaderJson, frontier: Frontier): Promise<string | null> {
    const ahead = [...this.heads].some(([device, head]) => head.seq > (frontier.get(device)?.seq ?? -1));
    const mine = ahead ? await this.foldCut(seqsOf(frontier)) : { state: this.fold, frontier: this.heads };
    const differs =
      [...frontier].find(([device, head]) => mine.frontier.get(device)?.op_id !== head.op_id)?.[0] ??
      (mine.state.stateHash() !== header.state_hash ? 'the state hash' : null);
    if (differs === null) return null;
    this.stats.counters.checkpoints_refused++;
    const reason = `checkpoint ${header.checkpoint_hash} is not what this device folds from its own journal at that frontier (${differs} differs); it keeps its history`;
    this.deps.log?.warn({ checkpoint_hash: header.checkpoint_hash }, reason);
    return reason;
  }

  /**
   * The relay's latest checkpoint that this device authenticates (with `covering`, of those that
   * cover a device that far). A header refused only because its publisher was not in the roster
   * this device read last asks for the roster again, once.
   */
  private async latestCheckpoint(covering?: Covering): Promise<CheckpointHeaderJson | null> {
    if (this.keys.size === 0) await this.refreshRoster(true);
    this.authority.unknownPublisher = false;
    this.authority.missingKid = null;
    const latest = await this.deps.relay.latestCheckpoint(covering, this.authority.authentic);
    if (!this.authority.unknownPublisher) return latest;
    await this.refreshRoster(true);
    return this.deps.relay.latestCheckpoint(covering, this.authority.authentic);
  }

  /**
   * Automatic maintenance after a background pump (proposals/session.md §Live mode): once
   * `autoCheckpointOps` new ops arrived, checkpoint and compact when the device is quiet, or
   * regardless once OVERDUE times as many arrived; while a burst goes on, look again later.
   */
  private async maintainWhenDue(report: PumpReport): Promise<void> {
    // Quiet: this pump moved nothing, no append is in flight (a slow fdatasync holds a burst
    // back without ending it) and none started since the previous pump.
    const inFlight = this.ownSeq !== (this.ownHead?.seq ?? -1);
    const quiet =
      report.pushed === 0 && report.folded === 0 && this.unpushed.length === 0 && !inFlight && this.ownSeq === this.ownSeqAtLastPump;
    this.ownSeqAtLastPump = this.ownSeq;
    const every = this.options.autoCheckpointOps;
    if (!this.livePumps.isLive || every === 0 || this.opsSinceCheckpoint < every) return;
    if (!quiet && this.opsSinceCheckpoint < OVERDUE * every) this.livePumps.later(QUIET_CHECK_MS);
    else if (this.maintenanceDue()) await this.maintainLocked();
  }

  /** Whether maintenance may be tried again: its retry time passed, or the clock was set back past when it was set. */
  private maintenanceDue(): boolean {
    const now = this.deps.now();
    return now >= this.maintenanceRetryAt || now < this.maintenanceRetryAt - MAINTENANCE_RETRY_MS;
  }

  private async maintainLocked(): Promise<void> {
    const published = await this.checkpointLocked();
    // Not yet possible (a peer lags, a key is missing): later pumps try again, not every one.
    if (published.published) {
      await this.compactLocked();
      return;
    }
    this.maintenanceRetryAt = this.deps.now() + MAINTENANCE_RETRY_MS;
    this.deps.log?.info({ reason: published.reason }, 'no automatic checkpoint yet');
  }

  /**
   * The relay's latest checkpoint, just rebased onto, does not cover the device a pull was
   * truncated at up to its floor: two devices restarted their chains at once, each putting back
   * a checkpoint without the other's (proposals/session.md §Pump). Publishes the merge of the
   * base with a checkpoint that does cover it, which the next rebase adopts; or says why not.
   */
  private async mergeCovering(truncated: OpsyncError, tried: ReadonlySet<string>): Promise<string | null> {
    const { device_id, floor } = truncated.data as { device_id?: unknown; floor?: unknown };
    const covering =
      typeof device_id === 'string' && typeof floor === 'number'
        ? await this.latestCheckpoint({ device: device_id as DeviceId, seq: floor - 1 })
        : null;
    if (!covering || tried.has(covering.checkpoint_hash))
      return `no checkpoint on the relay it has not just rebased onto covers device ${String(device_id)} up to where it starts`;
    const merged = await this.publishMerge(covering);
    return typeof merged === 'string' ? merged : null;
  }

  /** Merges the base with `header` and publishes the merge (its header), or says why they cannot be merged. */
  private async publishMerge(header: CheckpointHeaderJson): Promise<CheckpointHeaderJson | string> {
    const merged = await this.bases.mergedWith(header);
    if (typeof merged === 'string') return merged;
    await this.deps.relay.putCheckpoint(merged);
    this.stats.counters.checkpoints_merged++;
    this.deps.log?.info(
      { checkpoint_hash: merged.header.checkpoint_hash, merged: [this.bases.current?.hash, header.checkpoint_hash] },
      "published the merge of this device's base and a checkpoint",
    );
    return merged.header;
  }

  /**
   * Rebase (proposals/session.md §Rebase): adopt the relay's latest checkpoint as the base. The journal keeps every
   * op above the checkpoint's frontier — own ops it does not cover, which still chain onto its
   * head, and remote ops already held above it (so acks never go back) — behind a base marker,
   * and the state becomes the checkpoint's state plus those ops. A checkpoint that covers some
   * device less far than the journal's base is first merged with the base, and the merge published.
   */
  private async rebaseLocked(copyFirst = true): Promise<RebaseReport> {
    await this.ensureContact();
    const { relay } = this.deps;
    let header = await this.latestCheckpoint();
    const unchanged = this.bases.current?.hash ?? null;
    const kid = this.authority.missingKid;
    if (!header && kid !== null) {
      // As adopting one would: a device without the key cannot use the relay's checkpoints.
      throw new OpsyncError(
        'key_missing',
        `The relay's checkpoints are authenticated with key ${kid}, which this device does not hold; import it to use them.`,
        { kid },
      );
    }
    if (!header) return { rebased: false, base_checkpoint: unchanged, reason: 'the relay holds no checkpoint' };
    const behind = this.behindBase(header);
    if (behind) {
      // Moving onto it would lose what the base covers beyond it: the two are merged instead.
      const merged = await this.publishMerge(header);
      if (typeof merged === 'string') return { rebased: false, base_checkpoint: unchanged, reason: `${behind}, and ${merged}` };
      header = merged;
    }
    const target = header;
    return this.gate.hold(async () => {
      await this.lastDurable;
      // Only this device writes its ops on the relay, and it is not pushing now (this runs locked).
      const relayHead = await relay.head(this.device);
      this.assertNotCloned(relayHead, this.ownHead?.seq ?? -1);
      // The journal will name this checkpoint as its base, so its local copy must exist before the
      // rewrite: a crash after it, with the relay then losing the checkpoint, would otherwise
      // leave a journal no start can load. The copy is written while the checkpoint is verified.
      // (A bootstrap copies in the background; its first own op waits for the copy.)
      const copied = copyFirst ? this.bases.copy(target.checkpoint_hash) : null;
      copied?.catch(() => {});
      const { header: parsed, state } = await this.bases.adopt(target);
      const frontier = parsed.frontier;
      if ((frontier.get(this.device)?.seq ?? -1) > (this.ownHead?.seq ?? -1)) {
        throw new OpsyncError(
          'device_cloned',
          `Checkpoint ${parsed.checkpoint_hash} covers ops of ${this.device} this device never wrote: it is a clone.`,
          {
            device_id: this.device,
          },
        );
      }
      const above = (entry: JournalEntry) => entry.kind === 'op' && entry.op.seq > (frontier.get(entry.op.device_id)?.seq ?? -1);
      const base: BaseEntry = { kind: 'base', checkpoint_hash: parsed.checkpoint_hash, frontier };
      const kept: OpEntry[] = [];
      await this.journal.replay((entry) => {
        if (entry.kind === 'op' && above(entry)) kept.push(entry);
      });
      for (const [device, ops] of groupBy(
        kept.map((entry) => entry.op),
        (op) => op.device_id,
      )) {
        const anchored = anchorTail(frontier, device, ops, null, this.deps.crypto);
        const problem = !anchored.ok
          ? anchored
          : anchored.check.error && { code: 'chain_broken' as const, message: anchored.check.error.message };
        if (problem)
          throw new OpsyncError(problem.code, `Cannot rebase onto ${parsed.checkpoint_hash}: ${problem.message}.`, { device_id: device });
      }
      const verifier = new JournalVerifier(this.deps.journalLocation);
      [base, ...kept].forEach((entry, index) => verifier.check(entry, index + 2));
      // A rebase never takes a device's head back: that would lose the ops between from the state.
      const shorter = [...this.heads].find(([device, head]) => (verifier.heads.get(device)?.seq ?? -1) < head.seq);
      if (shorter) {
        await copied?.catch(() => undefined);
        return {
          rebased: false,
          base_checkpoint: unchanged,
          reason: `checkpoint ${parsed.checkpoint_hash} and the ops above it reach device ${shorter[0]} only below seq ${shorter[1].seq}, which this device holds`,
        };
      }
      await copied;
      await this.journal.rewrite({ head: [base], keep: above });

      // The journal now names the new base: nothing may fail (no relay call) before memory says
      // the same, or a later checkpoint would be cut from a stale base and lose what it covered.
      this.fold = state;
      this.heads.clear();
      this.held.clear();
      for (const [device, head] of verifier.heads) this.heads.set(device, head);
      for (const entry of kept) this.foldEntry(entry);
      for (const head of frontier.values()) this.clock.observe(head.hlc);
      this.unpushed = kept.map((e) => e.op).filter((op) => op.device_id === this.device && op.seq > relayHead);
      this.bases.rebased({ hash: parsed.checkpoint_hash, frontier }, copyFirst);
      await this.bases.prune();
      this.stats.counters.rebases++;
      const ownKept = kept.filter((e) => e.op.device_id === this.device).length;
      this.deps.log?.info({ checkpoint_hash: parsed.checkpoint_hash, kept_own_ops: ownKept }, 'rebased onto a checkpoint');
      return { rebased: true, base_checkpoint: parsed.checkpoint_hash, kept_own_ops: ownKept };
    });
  }

  /**
   * Why the journal cannot simply move onto `header`: it covers some device less far than the
   * base does (a relay restored from an older copy; a checkpoint cut while a device that had not
   * acked that device's ops held the stable frontier back), and the journal no longer holds the
   * ops between the two. Null when it covers at least as much.
   */
  private behindBase(header: CheckpointHeaderJson): string | null {
    const base = this.bases.current;
    const covers = parseFrontier(header.frontier);
    const short = base && [...base.frontier].find(([device, head]) => (covers?.get(device)?.seq ?? -1) < head.seq);
    if (!base || !short) return null;
    return `the relay's latest checkpoint ${header.checkpoint_hash} covers device ${short[0]} only below seq ${short[1].seq}, which this device's base ${base.hash} covers`;
  }

  // ---- helpers ----------------------------------------------------------------------------

  /** Runs `work` after the queued work, once the session is usable; a refusal is a rejected promise like any other failure. */
  private async locked<T>(work: () => Promise<T>): Promise<T> {
    this.assertUsable();
    return await this.serial.run(work);
  }

  private assertUsable(): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new OpsyncError('session_closed', 'The session is closed.');
  }

  /** A failed journal write leaves the file's state unknown: stop accepting work (proposals/session.md §Journal failure). */
  private fail(error: unknown): OpsyncError {
    if (this.failure) return this.failure;
    this.failure = isOpsyncError(error) ? error : new OpsyncError('journal_failed', `The journal failed: ${(error as Error).message}.`);
    this.lastError = this.failure.message;
    this.deps.log?.warn({ err: error }, 'the session stopped accepting work');
    return this.failure;
  }
}

function foldInput(op: OpRecord, plain: JsonObject): FoldOp {
  return { op_id: op.op_id, device_id: op.device_id, hlc: op.hlc, scope: op.scope, surface: op.surface, payload: plain };
}

function later(a: Hlc | null, b: Hlc): Hlc {
  return a === null || compareHlc(b, a) > 0 ? b : a;
}
