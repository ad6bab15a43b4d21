import type { CoreCrypto } from '../../src/oplog/core-crypto.js';
import type { SeqFrontier } from '../../src/oplog/frontier.js';
import type { DeviceId } from '../../src/oplog/ids.js';
import { canonicalRecord, type ChainHead, type OpRecord } from '../../src/oplog/op-record.js';
import { DEFAULT_EVICTION_HORIZON_MS } from '../../src/oplog/roster.js';
import { checkpointFileBytes } from '../port/checkpoint-files.js';
import { checkRestartAnchor, planPush } from '../port/push-rules.js';
import { assertAcksMonotone, keyConflict, truncatedAt, notRegistered } from '../port/relay-errors.js';
import {
  type CheckpointFile,
  type Covering,
  type CheckpointHeaderJson,
  type CheckpointStream,
  type GcBounds,
  type GcResult,
  type HeaderCheck,
  type PullPage,
  type Gap,
  type PushResult,
  type Relay,
  type RosterView,
  type Truncated,
  type Watch,
} from '../port/relay.js';
import {
  checkpointHead,
  collectableThrough,
  latestCovering,
  nothingToMend,
  PageBuilder,
  rosterView,
  staleCheckpoints,
} from '../port/relay-state.js';

interface DeviceRecord {
  publicKey: string;
  addedMs: number;
  lastSeenMs: number;
  /** ops[i] has seq floor + i. */
  ops: OpRecord[];
  floor: number;
  acked: Map<DeviceId, number>;
}

/**
 * A relay held in memory, shared by the devices that `connect` to it — the simulation's relay
 * and the contract suite's reference. The clock is injected.
 */
export class MemoryRelayStore {
  readonly devices = new Map<DeviceId, DeviceRecord>();
  readonly checkpoints = new Map<string, CheckpointFile>();
  /** Each stored op's record size, for pull pages. */
  readonly sizes = new WeakMap<OpRecord, number>();
  private readonly listeners = new Set<{ self: DeviceId; onChange: () => void }>();

  constructor(
    readonly crypto: CoreCrypto,
    readonly now: () => number,
    readonly horizonMs = DEFAULT_EVICTION_HORIZON_MS,
  ) {}

  connect(self: DeviceId): MemoryRelay {
    return new MemoryRelay(this, self);
  }

  listen(self: DeviceId, onChange: () => void): () => void {
    const listener = { self, onChange };
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed(by: DeviceId): void {
    for (const listener of this.listeners) if (listener.self !== by) listener.onChange();
  }
}

export class MemoryRelay implements Relay {
  readonly location = 'memory';

  constructor(
    private readonly store: MemoryRelayStore,
    readonly self: DeviceId,
  ) {}

  async register(publicKey: string): Promise<void> {
    await Promise.resolve();
    const existing = this.store.devices.get(this.self);
    if (existing) {
      if (existing.publicKey !== publicKey) throw keyConflict(this.self);
      return;
    }
    const now = this.store.now();
    this.store.devices.set(this.self, { publicKey, addedMs: now, lastSeenMs: now, ops: [], floor: 0, acked: new Map() });
  }

  async push(ops: readonly OpRecord[], authentic?: HeaderCheck): Promise<PushResult | Gap> {
    await Promise.resolve();
    const record = this.store.devices.get(this.self);
    const last = record?.ops.at(-1);
    const plan = await planPush(
      {
        self: this.self,
        publicKey: record?.publicKey ?? null,
        head: last ? { seq: last.seq, op_id: last.op_id, hlc: last.hlc } : null,
        floor: record?.floor ?? 0,
        heldOpId: (seq) => Promise.resolve(record?.ops[seq - record.floor]?.op_id),
        checkpointHead: (seq) => Promise.resolve(checkpointHead(this.headers(), this.self, seq, authentic)),
      },
      ops,
      this.store.crypto,
    );
    if ('gap' in plan) return plan;
    if (plan.floor !== undefined) record!.floor = plan.floor;
    if (plan.fresh.length > 0) {
      record!.ops.push(...plan.fresh);
      for (const op of plan.fresh) this.store.sizes.set(op, canonicalRecord(op).length);
      this.store.changed(this.self);
    }
    return { pushed: plan.fresh.length, deduped: plan.deduped };
  }

  async pull(since: SeqFrontier, limit: number): Promise<PullPage | Truncated> {
    await Promise.resolve();
    const page = new PageBuilder(limit);
    for (const [device, record] of [...this.store.devices].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (device === this.self) continue;
      const after = since.get(device) ?? -1;
      if (record.floor + record.ops.length - 1 <= after) continue;
      if (after < record.floor - 1) return truncatedAt(device, after, record.floor);
      for (let i = after + 1 - record.floor; i < record.ops.length; i++) {
        const op = record.ops[i]!;
        if (!page.add(op, this.store.sizes.get(op)!)) return page.page();
      }
    }
    return page.page();
  }

  async head(device: DeviceId): Promise<number> {
    await Promise.resolve();
    const record = this.store.devices.get(device);
    return record && record.ops.length > 0 ? record.floor + record.ops.length - 1 : -1;
  }

  // Records are kept as pushed, and nothing else writes them.
  readonly repairs = nothingToMend.repairs;
  readonly restoreCheckpoint = nothingToMend.restoreCheckpoint;
  readonly reportDamage = nothingToMend.reportDamage;

  async restartAbove(anchor: ChainHead, authentic?: HeaderCheck): Promise<void> {
    await Promise.resolve();
    const record = this.store.devices.get(this.self);
    if (!record) throw notRegistered(this.self);
    checkRestartAnchor(this.self, anchor, checkpointHead(this.headers(), this.self, anchor.seq, authentic));
    record.ops = [];
    record.floor = anchor.seq + 1;
    this.store.changed(this.self);
  }

  private headers(): CheckpointHeaderJson[] {
    return [...this.store.checkpoints.values()].map((file) => file.header);
  }

  async ack(acked: SeqFrontier): Promise<void> {
    await Promise.resolve();
    const record = this.store.devices.get(this.self);
    if (!record) throw notRegistered(this.self);
    assertAcksMonotone(this.self, record.acked, acked);
    for (const [device, seq] of acked) record.acked.set(device, seq);
    record.lastSeenMs = this.store.now();
  }

  async roster(): Promise<RosterView> {
    await Promise.resolve();
    const entries = [...this.store.devices].map(([device, r]) => ({
      device_id: device,
      public_key: r.publicKey,
      added_ms: r.addedMs,
      last_seen_ms: r.lastSeenMs,
      acked: new Map(r.acked),
    }));
    const floor = new Map([...this.store.devices].map(([device, r]) => [device, r.floor]));
    return rosterView(entries, floor, this.store.now(), this.store.horizonMs);
  }

  async putCheckpoint(file: CheckpointFile): Promise<boolean> {
    await Promise.resolve();
    if (this.store.checkpoints.has(file.header.checkpoint_hash)) return false;
    this.store.checkpoints.set(file.header.checkpoint_hash, file);
    this.store.changed(this.self);
    return true;
  }

  async latestCheckpoint(covering?: Covering, authentic?: HeaderCheck): Promise<CheckpointHeaderJson | null> {
    await Promise.resolve();
    return latestCovering(this.headers(), covering, authentic);
  }

  async readCheckpoint(hash: string): Promise<CheckpointStream | null> {
    await Promise.resolve();
    const file = this.store.checkpoints.get(hash);
    if (!file) return null;
    return {
      header: file.header,
      chunks: (async function* () {
        await Promise.resolve();
        yield* file.chunks;
      })(),
    };
  }

  async checkpointBytes(hash: string): Promise<AsyncIterable<Uint8Array> | null> {
    await Promise.resolve();
    const file = this.store.checkpoints.get(hash);
    return file ? toAsync(checkpointFileBytes(file)) : null;
  }

  async gc(bounds: GcBounds): Promise<GcResult> {
    const view = await this.roster();
    const record = this.store.devices.get(this.self);
    let droppedOps = 0;
    if (record && record.ops.length > 1) {
      const through = Math.min(collectableThrough(this.self, view, bounds.verified), record.floor + record.ops.length - 2);
      droppedOps = Math.max(0, through - record.floor + 1);
      record.ops.splice(0, droppedOps);
      record.floor += droppedOps;
    }
    const stale = staleCheckpoints(this.headers(), bounds.authentic);
    for (const header of stale) this.store.checkpoints.delete(header.checkpoint_hash);
    return { droppedOps, droppedCheckpoints: stale.length };
  }

  watch(onChange: () => void): Promise<Watch> {
    const stop = this.store.listen(this.self, onChange);
    return Promise.resolve({ close: () => Promise.resolve(void stop()) });
  }

  anomalies(): Readonly<Record<string, number>> {
    return {};
  }

  bytes(): Promise<number> {
    return Promise.resolve(Buffer.byteLength(JSON.stringify([...this.store.devices.values()].map((device) => device.ops))));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

async function* toAsync<T>(items: Iterable<T>): AsyncGenerator<T> {
  await Promise.resolve();
  yield* items;
}
