import type { Keyring } from '../crypto/keyring.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import { parseFrontier, type Frontier } from '../oplog/frontier.js';
import type { DeviceId } from '../oplog/ids.js';
import type { ChainHead, OpRecord } from '../oplog/op-record.js';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
import type { CheckpointFile, CheckpointHeaderJson, Relay, SeqRange } from '../../relay/port/relay.js';
import { gapError } from '../../relay/port/relay-errors.js';
import type { BaseCheckpoints } from './base-checkpoints.js';
import { checkpointDamaged, trustedHeader } from './checkpoint-seal.js';
import { PUBLISHER_UNREGISTERED, type Peers } from './peers.js';
import { iterate, type CheckpointStore } from './checkpoint-store.js';
import type { Replica } from './replica.js';
import type { SessionLog } from './session-log.js';
import type { SessionStats } from './session-stats.js';

export interface MendingDeps {
  readonly device: DeviceId;
  readonly relay: Relay;
  readonly checkpoints: CheckpointStore;
  readonly keyring: Keyring;
  readonly crypto: CoreCrypto;
  /** Which checkpoints the relay serves this device trusts (`trust`, `authentic`), with the roster's keys. */
  readonly peers: Pick<Peers, 'trust' | 'authentic' | 'authority'>;
  readonly log?: SessionLog | undefined;
  /** The journal's base checkpoint and its merges. */
  readonly bases: BaseCheckpoints;
  /** The journal, for this device's own ops. */
  readonly replica: Pick<Replica, 'ownOps'>;
  /** Where ops to push again go (`Outbox`). */
  readonly outbox: {
    /** The next pushes start at seq `from`, with these own ops first. */
    requeue(from: number, ops: readonly OpRecord[]): void;
    /** Runs a relay write, registering the device again if the relay forgot it. */
    known<T>(write: () => Promise<T>): Promise<T>;
  };
  readonly stats: SessionStats;
}

/**
 * What a device does when the relay lost or damaged what it was given (the relay is untrusted
 * storage, and this device still holds its own ops and its checkpoint copies):
 * queue lost ops again, push damaged ranges again, put damaged checkpoints back, and restart its
 * chain on the relay above its base checkpoint when its journal was compacted past what the
 * relay lacks (proposals/session.md §A relay that lost this device's ops).
 */
export class RelayMending {
  /** Checkpoint reports looked at, so each is looked at once. */
  private readonly checkedCheckpoints = new Set<string>();
  /** Damaged ranges the relay refused to take again (a fork), by `rangeKey`: logged once, not tried again. */
  private readonly unrestorable = new Set<string>();

  constructor(private readonly deps: MendingDeps) {}

  /**
   * When the relay holds fewer of this device's ops than it was given up to `pushedThrough` (it
   * was re-created, or replaced by another relay), queues every own op above the relay's head
   * again from the journal. A journal compacted past the relay's head restarts the chain instead.
   */
  async refill(pushedThrough: number): Promise<void> {
    const head = await this.deps.relay.head(this.deps.device);
    if (head >= pushedThrough) return;
    if (head + 1 < this.journalFrom()) return this.restart(`the relay holds this device's ops only up to seq ${head}`);
    const ops = await this.deps.replica.ownOps((op) => op.seq > head);
    this.deps.outbox.requeue(head + 1, ops);
    this.deps.log?.info({ from_seq: head + 1, ops: ops.length }, 'the relay lost ops of this device; pushing them again from the journal');
  }

  /**
   * Pushes again, from the journal, the ranges of this device's ops that readers found damaged
   * on the relay. When the journal was compacted past a range, the device restarts its ops on the
   * relay above its base instead. A range the relay refuses as a fork is given up: logged once and
   * not tried again by this process.
   */
  async restoreRanges(ranges: readonly SeqRange[]): Promise<void> {
    const wanted = ranges.filter((range) => !this.unrestorable.has(rangeKey(range)));
    const compacted = wanted.find((range) => range.first < this.journalFrom());
    if (compacted) return this.restart(`readers cannot read this device's ops ${compacted.first} to ${compacted.last} on the relay`);
    if (wanted.length === 0) return;
    const ops = await this.deps.replica.ownOps((op) => wanted.some((range) => op.seq >= range.first && op.seq <= range.last));
    try {
      const pushed = await this.deps.outbox.known(() => this.deps.relay.push(ops, this.deps.peers.authentic));
      if ('gap' in pushed) throw gapError(pushed);
    } catch (error) {
      if (!isOpsyncError(error) || (error.code !== 'relay_fork' && error.code !== 'chain_broken')) throw error;
      for (const range of wanted) {
        this.unrestorable.add(rangeKey(range));
        this.deps.log?.warn(
          { range },
          `readers cannot read this device's ops ${range.first} to ${range.last} on the relay, and the relay refuses them again: ${error.message}`,
        );
      }
      throw error;
    }
    this.deps.log?.info({ ranges: wanted }, "readers reported this device's ops on the relay damaged; pushed them again from the journal");
  }

  /**
   * Puts this device's copy of a checkpoint that readers found damaged on the relay back there
   * (proposals/relay.md §Damaged checkpoints). Each report is looked at once: this device's copy
   * must open (hash and digests check out), the relay's must not.
   */
  async restoreCheckpoints(reported: readonly string[]): Promise<void> {
    const { relay, keyring, crypto } = this.deps;
    for (const hash of this.checkedCheckpoints) if (!reported.includes(hash)) this.checkedCheckpoints.delete(hash);
    for (const hash of reported) {
      if (this.checkedCheckpoints.has(hash)) continue;
      this.checkedCheckpoints.add(hash);
      const copy = await this.intactCopy(hash);
      if (!copy || (await checkpointDamaged(await relay.readCheckpoint(hash), keyring, crypto, this.deps.peers.trust)) !== true) continue;
      await relay.restoreCheckpoint(copy);
      this.deps.log?.info({ checkpoint_hash: hash }, "readers found a checkpoint damaged on the relay; put this device's copy back");
    }
  }

  /** The first own seq the journal holds: past its base checkpoint's cover. */
  private journalFrom(): number {
    return (this.deps.bases.current?.frontier.get(this.deps.device)?.seq ?? -1) + 1;
  }

  /**
   * The relay cannot serve this device's ops up to its journal's base — it lost them, or holds
   * them damaged — and the journal was compacted past them. The device restarts its chain on the
   * relay above an op a checkpoint there covers: the relay drops whatever it holds of this
   * device, and every own op of the journal above that op is pushed again. Devices behind the
   * checkpoint rebase onto it. The anchor is the relay's latest checkpoint's head of this device
   * when the journal holds that op, else the journal's base (`anchorOnBase`).
   */
  private async restart(why: string): Promise<void> {
    const { relay, device } = this.deps;
    const base = this.deps.bases.current!;
    const baseHead = base.frontier.get(device)!;
    const own = await this.deps.replica.ownOps((op) => op.seq > baseHead.seq);
    const latest = await this.latestAnchor(baseHead, own);
    const anchor = latest?.head ?? (await this.anchorOnBase(base, why));
    await this.deps.outbox.known(() => relay.restartAbove(anchor, this.deps.peers.authentic));
    // Ops queued at or below the anchor (pushed before, or queued by a refill) are the checkpoint's now.
    this.deps.outbox.requeue(
      anchor.seq + 1,
      own.filter((op) => op.seq > anchor.seq),
    );
    this.deps.log?.warn(
      { checkpoint_hash: latest?.hash ?? base.hash, from_seq: anchor.seq + 1 },
      `${why}, and the journal was compacted past them: restarted this device's ops on the relay above a checkpoint`,
    );
  }

  /**
   * The relay's latest checkpoint and its head of this device, when that is one of the journal's
   * own ops: a restart anchored there puts nothing back, and collection keeps the latest
   * checkpoint, which a restart's first push needs. (A put-back base covers less than the
   * checkpoints after it, so another device's collection may remove it again at once.)
   */
  private async latestAnchor(baseHead: ChainHead, own: readonly OpRecord[]): Promise<{ hash: string; head: ChainHead } | null> {
    const header = await this.deps.relay.latestCheckpoint(undefined, this.deps.peers.authentic);
    const head = header && parseFrontier(header.frontier)?.get(this.deps.device);
    const mine = head && (head.seq === baseHead.seq ? baseHead : own.find((op) => op.seq === head.seq));
    if (!head || mine?.op_id !== head.op_id) return null;
    return { hash: header.checkpoint_hash, head };
  }

  /**
   * Makes the relay's latest checkpoint cover the journal's base head of this device, the
   * restart's anchor, and returns it: readers behind the anchor rebase onto the latest. When the
   * latest covers other devices further than the base, the two are merged and the merge put on
   * the relay — also when the relay holds the base, which is then not the latest (a simulation
   * schedule ended with a device that rebased onto a latest that did not cover the restarted
   * chain). Otherwise the base is put back from this device's copy when the relay lacks it. The
   * relay's copy anchors the restart only once this device trusts it: its publisher may be one the
   * roster read last did not show (a relay restored from an older copy forgot its registration
   * until it wrote again), and `trust` reads the roster again, as the relay's check of the anchor
   * would not.
   */
  private async anchorOnBase(base: { readonly hash: string; readonly frontier: Frontier }, why: string): Promise<ChainHead> {
    const { relay, device } = this.deps;
    const anchor = base.frontier.get(device)!;
    const merged = await this.deps.bases.mergedWithLatest();
    if (merged) this.deps.stats.counters.checkpoints_merged++;
    const held = merged ? null : await relay.readCheckpoint(base.hash);
    if (held && (await this.anchorable(held.header, why))) return anchor;
    const copy = merged ?? (await this.intactCopy(base.hash));
    if (!copy) {
      throw new OpsyncError(
        'relay_gap',
        `${why}, and this device's journal, compacted onto checkpoint ${base.hash}, starts at seq ${anchor.seq + 1}; neither the relay nor this data directory holds that checkpoint any more, so this device cannot refill the relay. Restore the relay folder from a copy, or start a new relay and rebase the devices onto a checkpoint.`,
        { device_id: device, journal_from: anchor.seq + 1, checkpoint_hash: base.hash },
      );
    }
    await relay.putCheckpoint(copy);
    if (merged) return anchor;
    // The relay keeps the first copy of a checkpoint it is given, and the same state may have been
    // published by two devices: the copy it holds, perhaps another device's signed by its
    // publisher, is what its check of the anchor reads (a simulation schedule put both back at once).
    const stored = await relay.readCheckpoint(base.hash);
    if (stored && (await this.anchorable(stored.header, why))) return anchor;
    throw new OpsyncError(
      'relay_gap',
      `${why}, and the copy of checkpoint ${base.hash} the relay holds is not one this device trusts, so it cannot anchor this device's ops there.`,
      { device_id: device, checkpoint_hash: base.hash },
    );
  }

  /**
   * Whether this device trusts a checkpoint the relay serves as a restart's anchor (`trust`, which
   * reads the roster again for a publisher it did not show). When its publisher is a device the
   * relay no longer has registered (restored from an older copy), nobody can check the anchor until
   * that device writes again and so registers again: the restart waits, and says so.
   */
  private async anchorable(header: CheckpointHeaderJson, why: string): Promise<boolean> {
    try {
      await trustedHeader(header, this.deps.crypto, this.deps.peers.trust);
      return true;
    } catch (error) {
      if (!this.deps.peers.authority.unknownPublisher) return false;
      throw new OpsyncError('relay_gap', `${why}, and ${PUBLISHER_UNREGISTERED}: this device restarts its ops on the relay then.`, {
        device_id: this.deps.device,
        checkpoint_hash: header.checkpoint_hash,
        waiting_for_publisher: true,
        cause: (error as Error).message,
      });
    }
  }

  /** This device's copy of a checkpoint, read whole, when it has one that opens. */
  private async intactCopy(hash: string): Promise<CheckpointFile | null> {
    const copy = await this.deps.checkpoints.get(hash).catch(() => null);
    if (!copy) return null;
    const chunks: string[] = [];
    try {
      for await (const chunk of copy.chunks) chunks.push(chunk);
    } catch {
      return null;
    }
    return (await checkpointDamaged({ header: copy.header, chunks: iterate(chunks) }, this.deps.keyring, this.deps.crypto, 'local')) ===
      false
      ? { header: copy.header, chunks }
      : null;
  }
}

function rangeKey(range: SeqRange): string {
  return `${range.first}-${range.last}`;
}
