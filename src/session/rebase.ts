import { anchorTail } from '../checkpoint/anchor.js';
import type { BaseEntry, JournalEntry, OpEntry } from '../journal/journal.js';
import { JournalVerifier } from '../journal/journal-verifier.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import { parseFrontier, type Frontier } from '../oplog/frontier.js';
import type { DeviceId } from '../oplog/ids.js';
import type { ChainHead } from '../oplog/op-record.js';
import { OpsyncError } from '../util/opsync-error.js';
import { groupBy } from '../util/group.js';
import type { Gate } from '../util/serial.js';
import type { CheckpointHeaderJson, Relay, Truncated } from '../../relay/port/relay.js';
import type { BaseCheckpoints, BaseRef } from './base-checkpoints.js';
import type { Outbox } from './outbox.js';
import { PUBLISHER_UNREGISTERED, type Peers } from './peers.js';
import type { Replica } from './replica.js';
import type { SessionLog } from './session-log.js';
import type { RebaseReport } from './session-reports.js';
import type { SessionStats } from './session-stats.js';

/** What a part that moves the journal onto a checkpoint works with (`Rebaser`, `Maintenance`). */
export interface RewriteDeps {
  readonly device: DeviceId;
  readonly relay: Relay;
  readonly replica: Replica;
  readonly bases: BaseCheckpoints;
  readonly peers: Peers;
  readonly outbox: Outbox;
  /** Held while the journal is rewritten: appends wait at it. */
  readonly gate: Gate;
  readonly stats: SessionStats;
  readonly log?: SessionLog | undefined;
}

export interface RebaseDeps extends RewriteDeps {
  readonly crypto: CoreCrypto;
  /** Where the journal lives, for messages. */
  readonly journalLocation: string;
}

/**
 * Rebase (proposals/session.md §Rebase): adopt the relay's latest checkpoint as the base. The
 * journal keeps every op above the checkpoint's frontier — own ops it does not cover, which still
 * chain onto its head, and remote ops already held above it (so acks never go back) — behind a
 * base marker, and the state becomes the checkpoint's state plus those ops. A checkpoint that
 * covers some device less far than the journal's base is first merged with the base, and the
 * merge published.
 */
export class Rebaser {
  constructor(private readonly deps: RebaseDeps) {}

  /** `copyFirst`: make the local copy before the rewrite (a bootstrap copies in the background). */
  async rebase(copyFirst = true): Promise<RebaseReport> {
    await this.deps.outbox.ensureContact();
    const unchanged = this.deps.bases.current?.hash ?? null;
    const target = await this.target();
    if (typeof target === 'string') return { rebased: false, base_checkpoint: unchanged, reason: target };
    return this.deps.gate.hold(() => this.adopt(target, copyFirst));
  }

  /**
   * The relay's latest checkpoint truncated a pull at some device's floor, yet the checkpoint this
   * pump just rebased onto does not cover that device up to the floor: two devices restarted their
   * chains at once, each putting back a checkpoint without the other's (proposals/session.md §Pump).
   * Publishes the merge of the base with a checkpoint that does cover it, which the next rebase
   * adopts; or says why not.
   */
  async mergeCovering({ truncated }: Truncated, tried: ReadonlySet<string>): Promise<string | null> {
    const covering = await this.deps.peers.latestCheckpoint({ device: truncated.device_id, seq: truncated.floor - 1 });
    if (!covering || tried.has(covering.checkpoint_hash))
      return `no checkpoint on the relay it has not just rebased onto covers device ${truncated.device_id} up to where it starts`;
    const merged = await this.publishMerge(covering);
    return typeof merged === 'string' ? merged : null;
  }

  /** The checkpoint to move onto — the relay's latest, or its merge with the base — or why there is none. */
  private async target(): Promise<CheckpointHeaderJson | string> {
    const header = await this.deps.peers.latestCheckpoint();
    const kid = this.deps.peers.authority.missingKid;
    if (!header && kid !== null) {
      // As adopting one would: a device without the key cannot use the relay's checkpoints.
      throw new OpsyncError(
        'key_missing',
        `The relay's checkpoints are authenticated with key ${kid}, which this device does not hold; import it to use them.`,
        { kid },
      );
    }
    if (!header) return this.deps.peers.authority.unknownPublisher ? PUBLISHER_UNREGISTERED : 'the relay holds no checkpoint';
    const behind = behindBase(this.deps.bases.current, header);
    if (!behind) return header;
    // Moving onto it would lose what the base covers beyond it: the two are merged instead.
    const merged = await this.publishMerge(header);
    return typeof merged === 'string' ? `${behind}, and ${merged}` : merged;
  }

  /** Runs at the gate: verifies `target`, keeps the ops above it, rewrites the journal and replaces the state. */
  private async adopt(target: CheckpointHeaderJson, copyFirst: boolean): Promise<RebaseReport> {
    const { replica, bases, outbox, device } = this.deps;
    await replica.durable();
    // Only this device writes its ops on the relay, and it is not pushing now (this runs locked).
    const relayHead = await this.deps.relay.head(device);
    outbox.assertNotCloned(relayHead, replica.ownHead?.seq ?? -1);
    // The journal will name this checkpoint as its base, so its local copy must exist before the
    // rewrite: a crash after it, with the relay then losing the checkpoint, would otherwise leave a
    // journal no start can load. The copy is written while the checkpoint is verified.
    const copied = copyFirst ? bases.copy(target.checkpoint_hash) : null;
    copied?.catch(() => {});
    const { header, state } = await bases.adopt(target);
    const { checkpoint_hash: hash, frontier } = header;
    if ((frontier.get(device)?.seq ?? -1) > (replica.ownHead?.seq ?? -1)) {
      throw new OpsyncError('device_cloned', `Checkpoint ${hash} covers ops of ${device} this device never wrote: it is a clone.`, {
        device_id: device,
      });
    }
    const above = (entry: JournalEntry) => entry.kind === 'op' && entry.op.seq > (frontier.get(entry.op.device_id)?.seq ?? -1);
    const base: BaseEntry = { kind: 'base', checkpoint_hash: hash, frontier };
    const kept = await replica.entries(above);
    const heads = this.keptHeads(hash, base, kept);
    // A rebase never takes a device's head back: that would lose the ops between from the state.
    const shorter = [...replica.heads].find(([d, head]) => (heads.get(d)?.seq ?? -1) < head.seq);
    if (shorter) {
      await copied?.catch(() => undefined);
      return {
        rebased: false,
        base_checkpoint: bases.current?.hash ?? null,
        reason: `checkpoint ${hash} and the ops above it reach device ${shorter[0]} only below seq ${shorter[1].seq}, which this device holds`,
      };
    }
    await copied;
    await replica.rewrite([base], above);
    // The journal now names the new base: nothing may fail (no relay call) before memory says the
    // same, or a later checkpoint would be cut from a stale base and lose what it covered.
    replica.foldOnto(state, kept, heads, frontier);
    outbox.rebased(
      kept.map((entry) => entry.op),
      relayHead,
    );
    bases.rebased({ hash, frontier }, copyFirst);
    await bases.prune();
    this.deps.stats.counters.rebases++;
    const ownKept = kept.filter((entry) => entry.op.device_id === device).length;
    this.deps.log?.info({ checkpoint_hash: hash, kept_own_ops: ownKept }, 'rebased onto a checkpoint');
    return { rebased: true, base_checkpoint: hash, kept_own_ops: ownKept };
  }

  /** The heads of the base and the kept ops, once every device's kept ops are checked to continue its head in the base. */
  private keptHeads(hash: string, base: BaseEntry, kept: readonly OpEntry[]): ReadonlyMap<DeviceId, ChainHead> {
    for (const [device, ops] of groupBy(
      kept.map((entry) => entry.op),
      (op) => op.device_id,
    )) {
      const anchored = anchorTail(base.frontier, device, ops, null, this.deps.crypto);
      const problem = !anchored.ok
        ? anchored
        : anchored.check.error && { code: 'chain_broken' as const, message: anchored.check.error.message };
      if (problem) throw new OpsyncError(problem.code, `Cannot rebase onto ${hash}: ${problem.message}.`, { device_id: device });
    }
    const verifier = new JournalVerifier(this.deps.journalLocation);
    [base, ...kept].forEach((entry, index) => verifier.check(entry, index + 2));
    return verifier.heads;
  }

  /** Merges the base with `header` and publishes the merge (its header), or says why they cannot be merged. */
  private async publishMerge(header: CheckpointHeaderJson): Promise<CheckpointHeaderJson | string> {
    const { bases } = this.deps;
    const merged = await bases.mergedWith(header);
    if (typeof merged === 'string') return merged;
    await this.deps.relay.putCheckpoint(merged);
    this.deps.stats.counters.checkpoints_merged++;
    this.deps.log?.info(
      { checkpoint_hash: merged.header.checkpoint_hash, merged: [bases.current?.hash, header.checkpoint_hash] },
      "published the merge of this device's base and a checkpoint",
    );
    return merged.header;
  }
}

/**
 * Why the journal cannot simply move onto `header`: it covers some device less far than its base
 * does (a relay restored from an older copy; a checkpoint cut while a device that had not acked
 * that device's ops held the stable frontier back), and the journal no longer holds the ops
 * between the two. Null when it covers at least as much.
 */
export function behindBase(base: BaseRef | null, header: CheckpointHeaderJson): string | null {
  const covers: Frontier | null = parseFrontier(header.frontier);
  const short = base && [...base.frontier].find(([device, head]) => (covers?.get(device)?.seq ?? -1) < head.seq);
  if (!base || !short) return null;
  return `the relay's latest checkpoint ${header.checkpoint_hash} covers device ${short[0]} only below seq ${short[1].seq}, which this device's base ${base.hash} covers`;
}
