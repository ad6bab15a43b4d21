import type { FoldState } from '../fold/fold-state.js';
import { seqsOf, frontierToJson, parseFrontier, type Frontier } from '../oplog/frontier.js';
import { isCheckpointHash, type DeviceId } from '../oplog/ids.js';
import { checkpointFileBytes } from '../../relay/port/checkpoint-files.js';
import type { CheckpointHeaderJson } from '../../relay/port/relay.js';
import { cutCheckpoint, type Publisher } from './checkpoint-seal.js';
import { behindBase, type RewriteDeps } from './rebase.js';
import type { CheckpointReport, CompactReport, PumpReport } from './session-reports.js';

export interface MaintenanceDeps extends RewriteDeps {
  readonly publisher: Publisher;
  readonly now: () => number;
  /**
   * When live, publish a checkpoint and compact once this many new ops arrived and a pump finds
   * nothing to do with no append since the previous pump, or regardless once OVERDUE times as
   * many arrived; 0: never automatically.
   */
  readonly autoCheckpointOps: number;
}

/** A device that is never quiet still checkpoints after this many times `autoCheckpointOps` new ops. */
const OVERDUE = 4;
/** While a checkpoint is due but appends go on, pump again after this long to see whether they stopped. */
const QUIET_CHECK_MS = 500;
/** After automatic maintenance could not publish a checkpoint, the least wait before it tries again. */
const MAINTENANCE_RETRY_MS = 5_000;

/**
 * Checkpoints and compaction (proposals/session.md §Checkpoints, §Compaction), and when a live
 * device runs them by itself (§Live mode).
 */
export class Maintenance {
  private opsSinceCheckpoint = 0;
  /** The replica's `ownSeq` when the previous background pump ended: a burst of appends defers maintenance. */
  private ownSeqAtLastPump = -1;
  /** Wall time (`deps.now`) before which automatic maintenance is not retried after it could not publish. */
  private retryAt = 0;

  constructor(private readonly deps: MaintenanceDeps) {}

  /** Counts ops appended or folded since the last checkpoint. */
  counted(ops: number): void {
    this.opsSinceCheckpoint += ops;
  }

  /**
   * Automatic maintenance after a background pump of a live session: once `autoCheckpointOps` new
   * ops arrived, checkpoint and compact when the device is quiet, or regardless once OVERDUE times
   * as many arrived. Returns when to look again while a burst goes on (ms), else null.
   */
  async afterPump(report: PumpReport, live: boolean): Promise<number | null> {
    const { replica, outbox } = this.deps;
    // Quiet: this pump moved nothing, no append is in flight (a slow fdatasync holds a burst back
    // without ending it) and none started since the previous pump.
    const inFlight = replica.ownSeq !== (replica.ownHead?.seq ?? -1);
    const quiet =
      report.pushed === 0 && report.folded === 0 && outbox.pending === 0 && !inFlight && replica.ownSeq === this.ownSeqAtLastPump;
    this.ownSeqAtLastPump = replica.ownSeq;
    const every = this.deps.autoCheckpointOps;
    if (!live || every === 0 || this.opsSinceCheckpoint < every) return null;
    if (!quiet && this.opsSinceCheckpoint < OVERDUE * every) return QUIET_CHECK_MS;
    if (!this.retryDue()) return null;
    const published = await this.checkpoint();
    if (published.published) {
      await this.compact();
      return null;
    }
    // Not yet possible (a peer lags, a key is missing): later pumps try again, not every one.
    this.retryAt = this.deps.now() + MAINTENANCE_RETRY_MS;
    this.deps.log?.info({ reason: published.reason }, 'no automatic checkpoint yet');
    return null;
  }

  /** Publishes a checkpoint of the state at the stable frontier. */
  async checkpoint(): Promise<CheckpointReport> {
    await this.deps.outbox.ensureContact();
    const roster = await this.deps.peers.refresh(true);
    const cut = new Map([...roster.stable].filter(([, seq]) => seq >= 0));
    const why = this.notCuttable(cut);
    if (why) return { published: false, reason: why };
    const { replica, bases } = this.deps;
    const { state, frontier, above, ownSeen } = await replica.foldCut(cut, await this.baseState());
    const { header, file } = cutCheckpoint(state, frontier, this.deps.publisher);
    // A checkpoint replaces history for every device that adopts it, so it is published only if
    // the cut plus the ops above it is exactly this device's state: memory that drifted from the
    // journal (a bug, or a journal changed under the running daemon) must not become everyone's.
    // Appends may land during the replay; the check runs when the replay saw exactly those in memory.
    if (ownSeen === (replica.ownHead?.seq ?? -1)) {
      for (const op of above) state.apply(op);
      if (state.stateHash() !== replica.state.stateHash()) {
        const reason =
          "this device's state does not match its journal, so its checkpoint would lose or invent records; restart the daemon to rebuild the state from the journal";
        this.deps.log?.warn({ journal_state: state.stateHash(), memory_state: replica.state.stateHash() }, reason);
        return { published: false, reason };
      }
    }
    await this.deps.relay.putCheckpoint(file);
    await bases.keepPublished({ hash: header.checkpoint_hash, frontier }, checkpointFileBytes(file));
    this.deps.stats.counters.checkpoints_published++;
    this.opsSinceCheckpoint = 0;
    this.deps.log?.info({ checkpoint_hash: header.checkpoint_hash, frontier: frontierToJson(frontier) }, 'published a checkpoint');
    return { published: true, checkpoint_hash: header.checkpoint_hash };
  }

  /** Compacts the journal behind the relay's latest checkpoint and collects this device's relay ops. */
  async compact(): Promise<CompactReport> {
    await this.deps.outbox.ensureContact();
    const { relay, bases, peers } = this.deps;
    const header = await peers.latestCheckpoint();
    if (!header) return { compacted: false, reason: 'the relay holds no checkpoint this device can authenticate' };
    const base = bases.current;
    if (header.checkpoint_hash === base?.hash) {
      const { droppedOps } = await relay.gc({ verified: base.frontier, authentic: peers.authentic });
      return {
        compacted: false,
        base_checkpoint: base.hash,
        relay_dropped_ops: droppedOps,
        reason: 'the journal is already based on the latest checkpoint',
      };
    }
    const hash = header.checkpoint_hash;
    // An authentic header names a hash and a frontier that parse; anything else is refused as damage.
    const frontier = bases.published?.hash === hash ? bases.published.frontier : parseFrontier(header.frontier);
    if (!frontier || !isCheckpointHash(hash)) return { compacted: false, reason: `checkpoint ${hash} names a malformed frontier or hash` };
    const why = behindBase(base, header) ?? this.notCompactable(frontier);
    if (why) return { compacted: false, reason: why };
    // Another device's checkpoint is never trusted for the state it claims: this device compares it
    // with the state its own journal folds to at that frontier (proposals/checkpoint.md
    // §Compaction). The journal will name the checkpoint as its base, so a verified copy is made
    // first: a crash right after the rewrite still finds it here (the relay may collect it later).
    if (bases.published?.hash !== hash) {
      const mismatch = await this.mismatch(header, frontier);
      if (mismatch) return { compacted: false, reason: mismatch };
      await bases.copyVerified(hash);
    }
    const { replica } = this.deps;
    await this.deps.gate.hold(async () => {
      await replica.durable();
      await replica.rewrite(
        [{ kind: 'base', checkpoint_hash: hash, frontier }],
        (entry) => entry.kind === 'op' && entry.op.seq > (frontier.get(entry.op.device_id)?.seq ?? -1),
        'compaction',
      );
    });
    bases.rebased({ hash, frontier }, true);
    await bases.prune();
    // The relay collects only what every active device acked as well (the stable frontier).
    const { droppedOps } = await relay.gc({ verified: frontier, authentic: peers.authentic });
    this.deps.stats.counters.compactions++;
    this.deps.log?.info({ checkpoint_hash: hash, relay_dropped_ops: droppedOps }, 'compacted the journal');
    return { compacted: true, base_checkpoint: hash, relay_dropped_ops: droppedOps };
  }

  /** Why no checkpoint is cut at `cut` (per device, the stable seq), or null. */
  private notCuttable(cut: ReadonlyMap<DeviceId, number>): string | null {
    if (cut.size === 0) return 'no op is acked by every active device yet';
    const { replica } = this.deps;
    const base = this.deps.bases.current;
    for (const [device, seq] of cut) {
      if ((replica.heads.get(device)?.seq ?? -1) < seq) return `this device has not yet folded device ${device} up to seq ${seq}`;
      if (seq < (base?.frontier.get(device)?.seq ?? -1)) return `the stable frontier for ${device} is behind this device's base checkpoint`;
    }
    const heldBelow = [...replica.held.values()].find((h) => h.seq <= (cut.get(h.device) ?? -1));
    if (heldBelow) return `this device cannot decrypt op ${heldBelow.seq} of ${heldBelow.device} (key ${heldBelow.kid ?? 'unknown'})`;
    if (base && [...cut].every(([device, seq]) => base.frontier.get(device)?.seq === seq) && cut.size === base.frontier.size)
      return 'the stable frontier has not moved since the base checkpoint';
    return null;
  }

  /** Why the journal is not compacted onto a checkpoint at `frontier`, or null. */
  private notCompactable(frontier: Frontier): string | null {
    const { replica } = this.deps;
    for (const [device, head] of frontier) {
      if ((replica.heads.get(device)?.seq ?? -1) < head.seq) return `this device has not yet folded device ${device} up to the checkpoint`;
    }
    const heldBelow = [...replica.held.values()].find((h) => h.seq <= (frontier.get(h.device)?.seq ?? -1));
    return heldBelow ? `this device holds an op of ${heldBelow.device} it cannot decrypt below the checkpoint` : null;
  }

  /**
   * Why another device's checkpoint is not the state this device folds from its own journal at
   * that frontier, or null when it is: the same op at every device's head and the same state
   * hash. When this device holds nothing above the frontier, its state is that state already;
   * otherwise the base and the journal are folded up to the frontier (`Replica.foldCut`). A
   * checkpoint that would lose, invent or change a record is never compacted onto, whoever signed it.
   */
  private async mismatch(header: CheckpointHeaderJson, frontier: Frontier): Promise<string | null> {
    const { replica } = this.deps;
    const ahead = [...replica.heads].some(([device, head]) => head.seq > (frontier.get(device)?.seq ?? -1));
    const mine = ahead
      ? await replica.foldCut(seqsOf(frontier), await this.baseState())
      : { state: replica.state, frontier: replica.heads };
    const differs =
      [...frontier].find(([device, head]) => mine.frontier.get(device)?.op_id !== head.op_id)?.[0] ??
      (mine.state.stateHash() !== header.state_hash ? 'the state hash' : null);
    if (differs === null) return null;
    this.deps.stats.counters.checkpoints_refused++;
    const reason = `checkpoint ${header.checkpoint_hash} is not what this device folds from its own journal at that frontier (${differs} differs); it keeps its history`;
    this.deps.log?.warn({ checkpoint_hash: header.checkpoint_hash }, reason);
    return reason;
  }

  /** The base checkpoint's state (a fresh copy) and frontier, which a cut folds onto. */
  private async baseState(): Promise<{ state: FoldState; frontier: Frontier } | null> {
    const base = this.deps.bases.current;
    return base && { state: (await this.deps.bases.load(base.hash)).state, frontier: base.frontier };
  }

  /** Whether maintenance may be tried again: its retry time passed, or the clock was set back past when it was set. */
  private retryDue(): boolean {
    const now = this.deps.now();
    return now >= this.retryAt || now < this.retryAt - MAINTENANCE_RETRY_MS;
  }
}
