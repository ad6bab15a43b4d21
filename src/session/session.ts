import type { ScopeKey } from '../crypto/scope-key.js';
import type { FoldState } from '../fold/fold-state.js';
import { payloadProblem } from '../fold/payload-rules.js';
import { canonicalize } from '../oplog/canonical.js';
import { seqFrontierToJson } from '../oplog/frontier.js';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
import { LIMITS } from '../util/limits.js';
import { Serializer } from '../util/serial.js';
import type { Rejection } from './intake.js';
import { LivePumps } from './live-pumps.js';
import type { SessionLog } from './session-log.js';
import type {
  AppendInput,
  AppendResult,
  ChangeEvent,
  ChangeOrigin,
  CheckpointReport,
  CompactReport,
  PumpReport,
  RebaseReport,
  SessionStatus,
  VerifyReport,
} from './session-reports.js';
import type { SessionStats } from './session-stats.js';
import { startOver, startSession, type SessionDeps, type SessionParts } from './startup.js';

export { DEFAULT_SESSION_OPTIONS, type SessionDeps, type SessionOptions } from './startup.js';
export type { SessionLog };

/**
 * One device's sync engine (proposals/session.md): appends, the pump, checkpoints, compaction and
 * rebase over a journal and a relay. The daemon puts it behind JSON-RPC; tests and the simulation
 * drive it directly. It owns the locks — a serializer that runs one pump, checkpoint, compaction
 * or rebase at a time, and the gate appends wait at while the journal is rewritten — and hands
 * each call to the part that does it (§Modules).
 *
 * Invariants:
 * - an append resolves only once its op is journal-durable; own ops are durable before pushed;
 * - a pump journals remote ops durably before it folds or acks them, and acks nothing else;
 * - verification (chain, run-head signature, skew) happens before anything is journaled;
 * - the journal is rewritten (compaction, rebase) only while appends wait at the gate.
 */
export class Session {
  readonly device;
  readonly stats: SessionStats;
  private readonly serial = new Serializer();
  private readonly live: LivePumps;
  private readonly listeners = new Set<(event: ChangeEvent) => void>();
  /** Changes emitted so far (`ChangeEvent.change`). */
  private changes = 0;
  /** Own ops folded since the last change was emitted: they go out once per turn of the event loop. */
  private localFolded = 0;
  private closed = false;

  private constructor(
    private readonly parts: SessionParts,
    private lastError: string | null,
  ) {
    this.device = parts.deps.device;
    this.stats = parts.stats;
    this.live = new LivePumps({
      relay: parts.deps.relay,
      serial: this.serial,
      pump: () => this.backgroundPump(),
      usable: () => !this.closed && !parts.replica.failure,
      failed: (message) => (this.lastError = message),
      periodicPumpMs: parts.options.periodicPumpMs,
      pushDebounceMs: parts.options.pushDebounceMs,
      log: parts.deps.log,
    });
  }

  /** Starts a session (`startSession`, proposals/session.md §Starting). */
  static async open(deps: SessionDeps): Promise<Session> {
    const { parts, lastError } = await startSession(deps);
    return new Session(parts, lastError);
  }

  /** The folded state (replaced wholesale by a rebase; read it through this getter). */
  get state(): FoldState {
    return this.parts.replica.state;
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
    if (!this.parts.deps.keyring.forScope(scope)) {
      throw new OpsyncError('key_missing', `This device holds no key for scope ${JSON.stringify(scope)}; import one first.`, {
        scope: JSON.stringify(scope),
      });
    }
    const { replica, bases, outbox, maintenance } = this.parts;
    if (bases.needsCopy) await this.baseCopied();
    await this.parts.gate.pass();
    this.assertUsable();
    const op = await replica.appendOwn({ surface, scope, payload, plainText });
    outbox.queue(op);
    this.stats.counters.appends++;
    this.stats.record('append', performance.now() - started);
    if (this.localFolded++ === 0) setImmediate(() => this.emit(null));
    maintenance.counted(1);
    this.live.afterAppend();
    return { op_id: op.op_id, seq: op.seq, hlc: op.hlc };
  }

  /** Adds an imported scope key and folds the held ops it opens. Returns how many were folded. */
  async importKey(key: ScopeKey): Promise<number> {
    this.assertUsable();
    this.parts.replica.addKey(key);
    return this.openHeld();
  }

  /**
   * Folds held ops that a newly imported key opens (proposals/envelope.md §Keys). Returns how many were folded.
   * Their journal entries keep `plain: null`; a restart decrypts them again while loading.
   */
  openHeld(): Promise<number> {
    return this.locked(async () => {
      const folded = await this.parts.replica.openHeld();
      if (folded > 0) this.emit({ origin: 'key', folded, rebased: false });
      return folded;
    });
  }

  /** One pump round (proposals/session.md §Pump): durable → push → pull → verify → journal → fold → ack. */
  pump(): Promise<PumpReport> {
    return this.locked(() => this.pumpLocked(true));
  }

  /** Publishes a checkpoint of the state at the stable frontier. */
  checkpoint(): Promise<CheckpointReport> {
    return this.locked(() => this.parts.maintenance.checkpoint());
  }

  /** Compacts the journal behind the relay's latest checkpoint and collects this device's relay ops. */
  compact(): Promise<CompactReport> {
    return this.locked(() => this.parts.maintenance.compact());
  }

  /** Rebases onto the relay's latest checkpoint, keeping own ops it does not cover. */
  rebase(): Promise<RebaseReport> {
    return this.locked(() => this.parts.rebaser.rebase());
  }

  /** Re-reads the whole journal and checks chains, op ids, signatures and cached plaintexts. */
  verify(): Promise<VerifyReport> {
    return this.locked(async () => {
      const { deps, peers, replica } = this.parts;
      const keys = new Map((peers.roster ?? (await deps.relay.roster())).entries.map((e) => [e.device_id, e.public_key]));
      keys.set(this.device, deps.deviceKey.publicKey);
      return replica.audit(keys);
    });
  }

  status(): SessionStatus {
    const { replica, peers, bases, outbox, pull, deps } = this.parts;
    const roster = peers.roster;
    const anomalies = deps.relay.anomalies();
    const refused = peers.authority.refused.size;
    return {
      device_id: this.device,
      state_hash: replica.state.stateHash(),
      journal_frontier: seqFrontierToJson(replica.seqs()),
      stable_frontier: roster ? seqFrontierToJson(roster.stable) : {},
      base_checkpoint: bases.current?.hash ?? null,
      roster: (roster?.entries ?? []).map((entry) => ({
        device_id: entry.device_id,
        status: entry.status,
        last_seen_ms: entry.last_seen_ms,
        acked: seqFrontierToJson(entry.acked),
        lag: [...replica.heads].reduce((lag, [device, head]) => lag + Math.max(0, head.seq - (entry.acked.get(device) ?? -1)), 0),
      })),
      counts: {
        records: replica.state.recordCount,
        unpushed: outbox.pending,
        quarantined: pull.quarantine.length,
        undecryptable: replica.held.size,
        skipped_payloads: replica.state.skipped.count,
        rejected: Object.fromEntries(pull.rejected),
        ignored_relay_files: { ...anomalies, ...(refused > 0 ? { checkpoint_unauthenticated: refused } : {}) },
      },
      quarantine: [...pull.quarantine],
      undecryptable_kids: [...new Set([...replica.held.values()].map((h) => h.kid ?? 'malformed'))].sort(),
      last_error: replica.failure?.message ?? this.lastError,
      clock_ahead_ms: replica.clockAheadMs,
    };
  }

  /** Whether the session takes work — its journal open and writable — and what keeps it from the relay, if anything. */
  readiness(): { ready: boolean; journal: 'open' | 'failed' | 'closed'; relay_error: string | null } {
    const failure = this.parts.replica.failure;
    const journal = failure ? 'failed' : this.closed ? 'closed' : 'open';
    return { ready: journal === 'open', journal, relay_error: failure ? null : this.lastError };
  }

  recentRejectionList(): readonly Rejection[] {
    return this.parts.pull.recentRejections;
  }

  /** Live sync (`LivePumps`): pumps when another device writes, after appends, and periodically. */
  startLive(): Promise<void> {
    return this.live.start();
  }

  /** Resolves once background work (a local copy of an adopted checkpoint) has finished. */
  async settled(): Promise<void> {
    await this.serial.idle();
    await this.parts.bases.settled();
  }

  /** Stops live sync, waits for queued work and the journal, and closes the journal. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const { replica, bases, pull } = this.parts;
    await this.live.stop();
    await this.serial.idle();
    await replica.durable();
    await this.serial.run(() => pull.finalAck());
    bases.copyLater();
    await bases.settled();
    await replica.close();
  }

  /** A background pump, then the maintenance it may start (`Maintenance.afterPump`). */
  private async backgroundPump(): Promise<void> {
    const report = await this.pumpLocked();
    const lookAgainMs = await this.parts.maintenance.afterPump(report, this.live.isLive);
    if (lookAgainMs !== null) this.live.later(lookAgainMs);
  }

  /** `eagerAck`: an explicit pump acks at once; background pumps throttle acks (`ackIntervalMs`). */
  private async pumpLocked(eagerAck = false): Promise<PumpReport> {
    const started = performance.now();
    const { replica, peers, outbox, pull, bases, maintenance } = this.parts;
    try {
      await peers.refreshForRefused();
      await replica.durable();
      this.assertUsable();
      await outbox.ensureContact();
      const { pushed, deduped } = await outbox.flush(this.lastError !== null);
      // An explicit pump reads the roster afresh, so that the status right after it is current;
      // background pumps read it at most every `rosterRefreshMs`.
      await peers.refresh(eagerAck);
      const { folded, rebased } = await pull.pull();
      maintenance.counted(folded);
      const state_hash = replica.state.stateHash();
      // Subscribers hear of folded ops as soon as they are folded; the ack that follows only tells
      // the relay what this device durably holds.
      if (folded > 0 || rebased) this.emit({ origin: 'remote', folded, rebased });
      const { acked, dueInMs } = await pull.ack(eagerAck);
      if (dueInMs !== null) this.live.later(dueInMs);
      bases.copyLater();
      this.lastError = null;
      this.stats.counters.pumps++;
      this.stats.record('pump', performance.now() - started);
      return { pushed, push_deduped: deduped, folded, acked, state_hash, rebased };
    } catch (error) {
      this.stats.counters.pump_errors++;
      this.lastError = (error as Error).message;
      throw error;
    }
  }

  /**
   * Before an own op goes into a journal whose base has no local copy yet (a bootstrap whose
   * copy is still being written, or failed): makes the copy. A device holding own ops above a
   * base found nowhere could not start again, while one that wrote nothing can start over — and
   * does, when the relay lost that checkpoint meanwhile: it moves onto the relay's latest one, or
   * starts from the ops.
   */
  private async baseCopied(): Promise<void> {
    const { bases, replica, rebaser } = this.parts;
    const attempt = () =>
      bases.ensureCopied().then(
        () => null,
        (error: unknown) => error,
      );
    let failure = await attempt();
    if (failure !== null && isOpsyncError(failure) && failure.code === 'checkpoint_not_found' && replica.ownSeq === -1) {
      const gone = failure;
      await this.locked(async () => {
        if (bases.needsCopy && !(await rebaser.rebase()).rebased) this.lastError = (await startOver(this.parts, gone)) ?? this.lastError;
      });
      failure = await attempt();
    }
    if (failure === null) return;
    const base = bases.current?.hash ?? 'none';
    throw new OpsyncError(
      isOpsyncError(failure) ? failure.code : 'relay_unavailable',
      `This device writes no op until it holds a copy of checkpoint ${base}, which its journal is based on: ${(failure as Error).message}`,
      { checkpoint_hash: base },
    );
  }

  /**
   * Tells the listeners what changed since the last change: what a pump or a key folded (`from`),
   * with the own ops folded meanwhile (an append's change waits for the end of its turn of the
   * event loop, or goes out with the next change).
   */
  private emit(from: { origin: ChangeOrigin; folded: number; rebased: boolean } | null): void {
    const local = this.localFolded;
    this.localFolded = 0;
    const folded = from?.folded ?? 0;
    const rebased = from?.rebased ?? false;
    if (this.closed || (folded === 0 && local === 0 && !rebased)) return;
    const origins: ChangeOrigin[] = local > 0 ? ['local'] : [];
    if (from && (folded > 0 || rebased)) origins.push(from.origin);
    const { replica } = this.parts;
    const event: ChangeEvent = {
      change: ++this.changes,
      surfaces: replica.takeChanged(),
      origins,
      folded: folded + local,
      state_hash: replica.state.stateHash(),
      rebased,
    };
    for (const listener of this.listeners) listener(event);
  }

  /** Runs `work` after the queued work, once the session is usable; a refusal is a rejected promise like any other failure. */
  private async locked<T>(work: () => Promise<T>): Promise<T> {
    this.assertUsable();
    return await this.serial.run(work);
  }

  private assertUsable(): void {
    const failure = this.parts.replica.failure;
    if (failure) throw failure;
    if (this.closed) throw new OpsyncError('session_closed', 'The session is closed.');
  }
}
