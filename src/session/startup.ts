import type { BaseEntry } from '../journal/journal.js';
import type { OpRecord } from '../oplog/op-record.js';
import { isOpsyncError, OpsyncError, type ErrorCode } from '../util/opsync-error.js';
import { Gate } from '../util/serial.js';
import type { Relay } from '../../relay/port/relay.js';
import { BaseCheckpoints } from './base-checkpoints.js';
import { DAMAGED_CHECKPOINT } from './checkpoint-seal.js';
import type { CheckpointStore } from './checkpoint-store.js';
import { Maintenance } from './maintenance.js';
import { contact, Outbox } from './outbox.js';
import { Peers } from './peers.js';
import { PullRound } from './pull-round.js';
import { Rebaser } from './rebase.js';
import { Replica, type Loaded, type ReplicaDeps } from './replica.js';
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
   * burst), or regardless once 4 times as many arrived; 0: never automatically.
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

/** What a session is opened with: what its replica needs, and the relay, the checkpoint copies and options. */
export interface SessionDeps extends ReplicaDeps {
  readonly relay: Relay;
  readonly checkpoints: CheckpointStore;
  readonly options?: Partial<SessionOptions>;
}

/** The parts of a session, each owning its state (proposals/session.md §Modules). */
export interface SessionParts {
  readonly deps: SessionDeps;
  readonly options: SessionOptions;
  readonly stats: SessionStats;
  /** Held while the journal is rewritten: appends wait at it. */
  readonly gate: Gate;
  readonly replica: Replica;
  readonly peers: Peers;
  readonly bases: BaseCheckpoints;
  readonly outbox: Outbox;
  readonly rebaser: Rebaser;
  readonly maintenance: Maintenance;
  readonly pull: PullRound;
}

/** A started session's parts, and why it could not reach the relay at start, if it could not. */
export interface Started {
  readonly parts: SessionParts;
  readonly lastError: string | null;
}

/** A checkpoint a new device cannot start from: damaged, gone, or sealed with a key it lacks. */
const UNUSABLE_CHECKPOINT: ReadonlySet<ErrorCode> = new Set([
  ...DAMAGED_CHECKPOINT,
  'checkpoint_not_found',
  'checkpoint_unauthenticated',
  'key_missing',
]);

/**
 * Starts a session (proposals/session.md §Starting): registers with the relay, replays and
 * verifies the journal, loads its base checkpoint, refuses a cloned device, and bootstraps an
 * empty device from the relay's latest checkpoint when there is one. A relay that cannot be
 * reached does not keep the device from working: it opens from its journal, and registers and
 * checks for a clone once a pump reaches the relay (§Starting offline).
 */
export async function startSession(deps: SessionDeps): Promise<Started> {
  let lastError: string | null = null;
  const relayHead = await contact(deps.relay, deps.deviceKey, deps.device).catch((error: unknown) => {
    if (!isOpsyncError(error) || error.code !== 'relay_unavailable') throw error;
    lastError = error.message;
    return null;
  });
  const unpushed: OpRecord[] = [];
  const loaded = await Replica.open(deps, (op) => {
    if (op.seq > (relayHead ?? -1)) unpushed.push(op);
  });
  const parts = assemble(deps, loaded.replica);
  try {
    for (const op of unpushed) parts.outbox.queue(op);
    const ahead = loaded.replica.clockAheadMs;
    if (ahead > parts.options.maxSkewMs) {
      deps.log?.warn(
        { clock_ahead_ms: ahead },
        "this device's stamps run ahead of its clock (it was set ahead once): peers quarantine its new ops until their clocks get there",
      );
    }
    if (loaded.base) await loadBase(parts, loaded.base, loaded.tail);
    await parts.bases.prune(true);
    if (relayHead === null) {
      parts.outbox.startUncontacted(loaded.replica.ownSeq);
      deps.log?.warn(
        { err: lastError },
        'the relay cannot be reached: this device works from its journal and syncs once the relay is back',
      );
    } else {
      parts.outbox.assertNotCloned(relayHead, loaded.replica.ownSeq);
      if (loaded.ops === 0 && !loaded.base && (await parts.peers.latestCheckpoint())) lastError = (await bootstrap(parts)) ?? lastError;
    }
  } catch (error) {
    await loaded.replica.close();
    throw error;
  }
  return { parts, lastError };
}

/**
 * A device that never wrote an op and whose base checkpoint is gone (a bootstrap cut short,
 * then the relay lost the checkpoint) holds nothing of its own: it starts over from the relay.
 * Returns why the relay's latest checkpoint could not be used, if it could not.
 */
export async function startOver(parts: SessionParts, missing: OpsyncError): Promise<string | null> {
  await parts.replica.startOver();
  parts.bases.rebased(null, true);
  parts.deps.log?.warn(
    { missing: missing.data },
    "this device's base checkpoint is gone and it never wrote an op: it starts over from the relay",
  );
  return (await parts.peers.latestCheckpoint()) ? bootstrap(parts) : null;
}

/** Builds the parts around an opened replica, each given what it uses. */
function assemble(deps: SessionDeps, replica: Replica): SessionParts {
  const options = { ...DEFAULT_SESSION_OPTIONS, ...deps.options };
  const stats = new SessionStats();
  const gate = new Gate();
  const { device, relay, log } = deps;
  const publisher = { device, deviceKey: deps.deviceKey, keyring: deps.keyring, crypto: deps.crypto };
  const peers = new Peers({ ...deps, rosterRefreshMs: options.rosterRefreshMs });
  const bases = new BaseCheckpoints({
    ...{ relay, store: deps.checkpoints, publisher, log, progress: deps.progress },
    ...{ trust: peers.trust, authentic: peers.authentic },
  });
  const outbox = new Outbox({ ...deps, ...options, replica, peers, bases, stats });
  const rebaser = new Rebaser({ ...deps, replica, bases, peers, outbox, gate, stats });
  const maintenance = new Maintenance({ ...deps, ...options, publisher, replica, bases, peers, outbox, gate, stats });
  const pull = new PullRound({ ...deps, ...options, replica, peers, bases, outbox, rebaser, stats });
  return { deps, options, stats, gate, replica, peers, bases, outbox, rebaser, maintenance, pull };
}

/** Loads the journal's base checkpoint and folds the journal's tail onto it. */
async function loadBase(parts: SessionParts, base: BaseEntry, tail: Loaded['tail']): Promise<void> {
  const { bases, replica } = parts;
  const loaded = await bases.load(base.checkpoint_hash).catch((error: unknown) => {
    if (isOpsyncError(error) && error.code === 'checkpoint_not_found') return error;
    throw error;
  });
  if (loaded instanceof OpsyncError) return rebaseOntoNewer(parts, loaded);
  replica.foldOnto(loaded.state, tail);
  bases.current = { hash: base.checkpoint_hash, frontier: base.frontier };
  bases.copyLater(); // when the copy was missing or damaged
}

/**
 * The journal's base checkpoint is gone — from this data directory (a crash before the copy
 * was made, or a lost copy) and from the relay (collected after two newer ones). The relay's
 * latest checkpoint stands in for it when the journal's ops continue it: the device rebases
 * onto it (rebase checks that every kept op is anchored); otherwise `missing` is the answer.
 */
async function rebaseOntoNewer(parts: SessionParts, missing: OpsyncError): Promise<void> {
  const { replica } = parts;
  const report = await parts.rebaser.rebase().catch((error: unknown) => {
    // Out of reach is not gone: a start that cannot reach the relay fails and tries again later.
    const unreachable = isOpsyncError(error) && error.code === 'relay_unavailable';
    if (replica.ownSeq === -1 && !unreachable) return null;
    // Named as the relay being out of reach, so that whoever starts the device knows to try again.
    throw new OpsyncError(
      unreachable ? 'relay_unavailable' : missing.code,
      `${missing.message} The relay's latest checkpoint cannot stand in for it either: ${(error as Error).message}`,
      missing.data,
    );
  });
  if (report?.rebased) {
    parts.deps.log?.warn(
      { missing: missing.data, base_checkpoint: report.base_checkpoint },
      "this device's base checkpoint is gone; rebased onto the relay's latest",
    );
    return;
  }
  if (replica.ownSeq !== -1) throw missing;
  await startOver(parts, missing);
}

/**
 * A new device starts from the relay's latest checkpoint. When that cannot be used (damaged,
 * gone, or sealed with a key this device lacks), it starts from the ops instead: the relay may
 * still hold them all, and if it does not, the first pump says why. Returns why, if it could not.
 */
async function bootstrap(parts: SessionParts): Promise<string | null> {
  try {
    // Its local copy is written in the background, so as not to slow the start: its first own
    // op waits for it (a device that wrote nothing starts over if the copy never came to be).
    await parts.rebaser.rebase(false);
    parts.bases.copyLater();
    return null;
  } catch (error) {
    if (!isOpsyncError(error) || !UNUSABLE_CHECKPOINT.has(error.code)) throw error;
    parts.deps.log?.warn({ err: error }, "the relay's latest checkpoint cannot be used; syncing from the ops instead");
    return error.message;
  }
}
