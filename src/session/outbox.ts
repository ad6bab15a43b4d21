import type { DeviceKey } from '../crypto/device-key.js';
import type { DeviceId } from '../oplog/ids.js';
import type { OpRecord } from '../oplog/op-record.js';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
import { gapError } from '../../relay/port/relay-errors.js';
import type { Relay } from '../../relay/port/relay.js';
import type { Peers } from './peers.js';
import { RelayMending, type MendingDeps } from './relay-mending.js';
import type { Replica } from './replica.js';
import type { SessionLog } from './session-log.js';
import type { SessionStats } from './session-stats.js';

export interface OutboxDeps extends Omit<MendingDeps, 'outbox'> {
  readonly deviceKey: DeviceKey;
  readonly replica: Replica;
  readonly peers: Peers;
  readonly stats: SessionStats;
  readonly now: () => number;
  /** Ops per push (a long offline stretch pushes in several segments). */
  readonly pushBatchSize: number;
  /** How often a push checks at least that the relay still holds every op this device pushed. */
  readonly relayCheckMs: number;
  readonly log?: SessionLog | undefined;
}

/** What a push moved. */
export interface Pushed {
  readonly pushed: number;
  readonly deduped: number;
}

/**
 * This device's side of the relay's copy of its chain (proposals/session.md §Outbox): the own ops
 * not pushed yet, its registration, the clone check, and the push — with its mending of what the
 * relay lost or damaged (`RelayMending`) and its one retry after a gap.
 */
export class Outbox {
  private unpushed: OpRecord[] = [];
  /** The relay forgot this device (it was re-created or reset): it may lack this device's ops too. */
  private relayForgot = false;
  /** Wall time (`deps.now`) of the last check that the relay holds this device's ops. */
  private relayCheckedAt = -Infinity;
  /**
   * Set when the relay could not be reached at start: this device works from its journal, and
   * the first call that reaches the relay registers it and makes the clone check against the
   * journal's head at start (`seq`) (`ensureContact`).
   */
  private uncontacted: { readonly seq: number } | null = null;
  private readonly mending: RelayMending;

  constructor(private readonly deps: OutboxDeps) {
    this.mending = new RelayMending({ ...deps, outbox: this });
  }

  /** Own ops not pushed yet. */
  get pending(): number {
    return this.unpushed.length;
  }

  /** Queues an own op the relay lacks (appended, or found in the journal at start). */
  queue(op: OpRecord): void {
    this.unpushed.push(op);
  }

  /**
   * The next pushes start at seq `from`: these own ops (from the journal, in seq order, from
   * `from` on) go first, then the queued ones above them; queued ones below `from` are dropped.
   */
  requeue(from: number, ops: readonly OpRecord[]): void {
    const newest = ops.at(-1)?.seq ?? from - 1;
    this.unpushed = [...ops, ...this.unpushed.filter((op) => op.seq > newest)];
  }

  /** The relay could not be reached at start, when the journal's own head was `seq`. */
  startUncontacted(seq: number): void {
    this.uncontacted = { seq };
  }

  /**
   * Before anything else that uses the relay once it could not be reached at start: registers,
   * and checks for a clone against the journal's head at start (ops appended since were never
   * pushed, so the relay cannot hold them). A clone stops the session, as it would have refused to
   * start. Ops the relay already holds leave the queue.
   */
  async ensureContact(): Promise<void> {
    if (!this.uncontacted) return;
    const relayHead = await contact(this.deps.relay, this.deps.deviceKey, this.deps.device);
    try {
      this.assertNotCloned(relayHead, this.uncontacted.seq);
    } catch (error) {
      throw this.deps.replica.fail(error);
    }
    this.unpushed = this.unpushed.filter((op) => op.seq > relayHead);
    this.uncontacted = null;
    this.deps.log?.info({ relay_head: relayHead }, 'reached the relay');
  }

  /** `own`: this device's journal head when it could last have pushed (at start, or now while nothing pushes). */
  assertNotCloned(relayHead: number, own: number): void {
    const device = this.deps.device;
    if (relayHead > own) {
      throw new OpsyncError(
        'device_cloned',
        `The relay holds ops of device ${device} up to seq ${relayHead}, but this data directory's journal ends at seq ${own}: ` +
          'it is a stale copy or a clone of another device. Start it with a new device id (and a fresh data directory).',
        { device_id: device, relay_head: relayHead, journal_head: own },
      );
    }
  }

  /** After a rebase: the queue is the kept own ops the relay lacks (it holds them up to `relayHead`). */
  rebased(kept: readonly OpRecord[], relayHead: number): void {
    this.unpushed = kept.filter((op) => op.device_id === this.deps.device && op.seq > relayHead);
  }

  /**
   * Pushes what is queued now (ops appended meanwhile wait for the next push, so a steady stream
   * of appends cannot keep a pump from pulling), after mending what the relay lost or damaged. The
   * relay may hold fewer of this device's ops than it was given — after a failed pump
   * (`afterFailure`), once it forgot this device, and every `relayCheckMs` anyway (a relay
   * restored from an older backup says nothing) — so it is checked then; a gap found by the push
   * checks it at once, and the push is tried again once.
   */
  async flush(afterFailure: boolean): Promise<Pushed> {
    const { relay } = this.deps;
    const authentic = this.deps.peers.authentic;
    const now = this.deps.now();
    // A clock set back since the last check counts as due.
    const checkDue = !(now >= this.relayCheckedAt && now - this.relayCheckedAt < this.deps.relayCheckMs);
    let refilled = afterFailure || this.relayForgot || checkDue;
    if (refilled) {
      await this.refill();
      this.relayForgot = false;
      this.relayCheckedAt = now;
    }
    // Damaged ops of this device on the relay first: a push continues from the relay's copy.
    const repairs = await relay.repairs(authentic);
    if (repairs.ops.length > 0) await this.mending.restoreRanges(repairs.ops);
    await this.mending.restoreCheckpoints(repairs.checkpoints);
    let pushed = 0;
    let deduped = 0;
    for (let remaining = this.unpushed.length; remaining > 0;) {
      const batch = this.unpushed.slice(0, Math.min(remaining, this.deps.pushBatchSize));
      const result = await this.known(() => relay.push(batch, authentic));
      if ('gap' in result) {
        if (refilled) throw gapError(result);
        await this.refill();
        remaining = this.unpushed.length;
        refilled = true;
        continue;
      }
      remaining -= batch.length;
      this.unpushed.splice(0, batch.length);
      pushed += result.pushed;
      deduped += result.deduped;
    }
    this.deps.stats.counters.pushed += pushed;
    this.deps.stats.counters.push_deduped += deduped;
    return { pushed, deduped };
  }

  /**
   * Runs a relay write; when the relay no longer knows this device (re-created, or a database
   * reset), registers the device again and retries once — and the next push checks what the
   * relay still holds of this device's ops.
   */
  async known<T>(write: () => Promise<T>): Promise<T> {
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

  /** Queues again, from the journal, own ops a relay that lost them no longer holds (`RelayMending.refill`). */
  private refill(): Promise<void> {
    const ownHead = this.deps.replica.ownHead?.seq ?? -1;
    return this.mending.refill((this.unpushed[0]?.seq ?? ownHead + 1) - 1);
  }
}

/** Registers a device with the relay; answers the relay's head of its ops. */
export async function contact(relay: Relay, deviceKey: DeviceKey, device: DeviceId): Promise<number> {
  await relay.register(deviceKey.publicKey);
  return relay.head(device);
}
