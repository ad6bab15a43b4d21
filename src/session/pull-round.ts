import type { Keyring } from '../crypto/keyring.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { DeviceId } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { truncatedError } from '../../relay/port/relay-errors.js';
import type { Relay, Truncated } from '../../relay/port/relay.js';
import type { BaseCheckpoints } from './base-checkpoints.js';
import { intake, type Quarantined, type Rejection, type RejectionKind } from './intake.js';
import type { Outbox } from './outbox.js';
import { PUBLISHER_UNREGISTERED, type Peers } from './peers.js';
import type { Rebaser } from './rebase.js';
import type { Replica } from './replica.js';
import type { SessionLog } from './session-log.js';
import type { SessionStats } from './session-stats.js';

export interface PullDeps {
  readonly device: DeviceId;
  readonly crypto: CoreCrypto;
  readonly keyring: Keyring;
  readonly relay: Relay;
  readonly replica: Replica;
  readonly peers: Peers;
  readonly bases: BaseCheckpoints;
  readonly outbox: Outbox;
  readonly rebaser: Rebaser;
  readonly stats: SessionStats;
  readonly now: () => number;
  /** Remote ops stamped further than this ahead of local wall time are quarantined. */
  readonly maxSkewMs: number;
  /** Ops per pull page. */
  readonly pullPageSize: number;
  /** Least time between two acks of background pumps. */
  readonly ackIntervalMs: number;
  readonly log?: SessionLog | undefined;
}

/** What a pull brought in. */
export interface Pulled {
  readonly folded: number;
  /** Whether the pull rebased (its frontier fell below the relay's floor). */
  readonly rebased: boolean;
}

/** What an ack did: how many ops it newly acked, and when a held-back ack is due (ms), if one is. */
export interface Acked {
  readonly acked: number;
  readonly dueInMs: number | null;
}

/** Acks are re-sent at least this often so the device stays "seen" even when nothing changes. */
const ACK_REFRESH_MS = 60_000;
const RECENT_REJECTIONS = 16;

/**
 * The pull half of a pump (proposals/session.md §Pump): pull pages above this device's heads,
 * verify them (`intake`), journal and fold what continues each chain, rebase when the relay's
 * floor passed a head, and ack what is durable. It remembers what it quarantined and refused.
 */
export class PullRound {
  private quarantined: readonly Quarantined[] = [];
  private readonly rejectedCounts = new Map<RejectionKind, number>();
  private readonly recent: Rejection[] = [];
  private lastAck: { frontier: Map<DeviceId, number>; atMs: number } | null = null;

  constructor(private readonly deps: PullDeps) {}

  /** Ops the last pull quarantined (stamped too far ahead). */
  get quarantine(): readonly Quarantined[] {
    return this.quarantined;
  }

  get rejected(): ReadonlyMap<RejectionKind, number> {
    return this.rejectedCounts;
  }

  get recentRejections(): readonly Rejection[] {
    return this.recent;
  }

  /** Pulls until the relay has nothing more this device can take. */
  async pull(): Promise<Pulled> {
    const { relay, replica } = this.deps;
    const stalled = new Set<DeviceId>();
    const quarantine: Quarantined[] = [];
    let folded = 0;
    // Checkpoints this pull rebased onto. Another device may put a checkpoint on the relay (a chain
    // restart does) and move its floor between a rebase and the next pull: the pull then rebases
    // again onto the newer checkpoint, never twice onto the same one.
    const rebasedOnto = new Set<string>();
    for (;;) {
      const since = new Map<DeviceId, number>();
      for (const [device, head] of replica.heads) if (device !== this.deps.device) since.set(device, head.seq);
      for (const device of stalled) since.set(device, Number.MAX_SAFE_INTEGER);
      const page = await relay.pull(since, this.deps.pullPageSize, this.deps.peers.authentic);
      if ('truncated' in page) {
        rebasedOnto.add(await this.rebaseAbove(page, rebasedOnto));
        continue;
      }
      const { peers } = this.deps;
      if (page.ops.some((op) => !peers.keys.has(op.device_id))) await peers.refresh(true);
      const result = intake(page.ops, {
        heads: replica.heads,
        keys: peers.keys,
        nowMs: this.deps.now(),
        maxSkewMs: this.deps.maxSkewMs,
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
      if (result.accepted.length > 0) {
        folded += await replica.accept(result.accepted);
        this.deps.stats.counters.pulled += result.accepted.length;
        const foldedAt = this.deps.now();
        for (const { op, plain } of result.accepted)
          if (plain !== null) this.deps.stats.record('propagation', Math.max(0, foldedAt - op.hlc.wall_ms));
      }
      if (!page.more || (result.accepted.length === 0 && newlyStalled.length === 0)) break;
    }
    this.quarantined = quarantine;
    this.deps.stats.counters.folded += folded;
    return { folded, rebased: rebasedOnto.size > 0 };
  }

  /**
   * Acks every durably journaled op (folded, or held for a key). `eager` (an explicit pump) acks
   * at once; background pumps ack at most every `ackIntervalMs`, and an ack held back says when
   * it is due, so that a trailing pump sends it and the stable frontier never waits for the slow
   * periodic pump.
   */
  async ack(eager: boolean): Promise<Acked> {
    const frontier = this.deps.replica.seqs();
    const previous = this.lastAck?.frontier ?? new Map<DeviceId, number>();
    let newly = 0;
    for (const [device, seq] of frontier) newly += Math.max(0, seq - (previous.get(device) ?? -1));
    const now = this.deps.now();
    // A wall clock set back (NTP, a user) must not hold acks back until it gets there again.
    const since = this.lastAck && now >= this.lastAck.atMs ? now - this.lastAck.atMs : Infinity;
    const interval = newly === 0 ? ACK_REFRESH_MS : eager ? 0 : this.deps.ackIntervalMs;
    if (since < interval) return { acked: 0, dueInMs: newly > 0 ? interval - since : null };
    await this.deps.outbox.known(() => this.deps.relay.ack(frontier));
    this.lastAck = { frontier, atMs: now };
    return { acked: newly, dueInMs: null };
  }

  /** On close, acks what the throttle held back (best effort: the relay may be out of reach). */
  async finalAck(): Promise<void> {
    const frontier = this.deps.replica.seqs();
    const acked = this.lastAck?.frontier;
    if (!acked || [...frontier].every(([device, seq]) => acked.get(device) === seq)) return;
    try {
      await this.deps.relay.ack(frontier);
    } catch (error) {
      this.deps.log?.warn({ err: error }, 'could not ack on close');
    }
  }

  /**
   * A pull was truncated at some device's floor: the relay collected ops this device never pulled.
   * Rebases onto the relay's latest checkpoint — or, when that is one this pull already rebased
   * onto, first publishes a merge that covers the device (`Rebaser.mergeCovering`). Returns the
   * checkpoint rebased onto; throws why it cannot rebase.
   */
  private async rebaseAbove(truncated: Truncated, rebasedOnto: ReadonlySet<string>): Promise<string> {
    const { rebaser, peers } = this.deps;
    const latest = rebasedOnto.size > 0 ? await peers.latestCheckpoint() : null;
    const why = latest && rebasedOnto.has(latest.checkpoint_hash) ? await rebaser.mergeCovering(truncated, rebasedOnto) : null;
    const result = why ? { rebased: false, reason: why } : await rebaser.rebase();
    if (!result.rebased) {
      const error = truncatedError(truncated);
      // Waiting for another device to register again is named in the data: it passes by itself.
      const waiting = result.reason === PUBLISHER_UNREGISTERED ? { waiting_for_publisher: true } : {};
      throw new OpsyncError(error.code, `${error.message} It cannot rebase: ${result.reason ?? 'no reason given'}.`, {
        ...error.data,
        ...waiting,
      });
    }
    return this.deps.bases.current!.hash;
  }

  private reject(rejection: Rejection): void {
    this.rejectedCounts.set(rejection.kind, (this.rejectedCounts.get(rejection.kind) ?? 0) + 1);
    this.recent.push(rejection);
    if (this.recent.length > RECENT_REJECTIONS) this.recent.shift();
    this.deps.log?.warn({ rejection }, 'refused ops from the relay');
  }
}
