import type { SeqFrontier } from '../../src/oplog/frontier.js';
import type { DeviceId } from '../../src/oplog/ids.js';
import type { ChainHead, OpRecord } from '../../src/oplog/op-record.js';
import { OpsyncError } from '../../src/util/opsync-error.js';
import type {
  CheckpointFile,
  Covering,
  Damage,
  Gap,
  GcBounds,
  HeaderCheck,
  PullPage,
  PushResult,
  Relay,
  Truncated,
} from '../../relay/port/relay.js';

/**
 * The simulation's network: seeded faults between every device and the relay. A partitioned
 * device reaches nothing; otherwise requests are dropped, responses lost, deliveries delayed
 * (a run of ops cut short), duplicated and reordered, all with probabilities that change over
 * the run. Nothing here can forge an op: the relay itself is honest, the network is not.
 */
export class Network {
  readonly partitioned = new Set<DeviceId>();
  faults = { drop: 0.1, lostResponse: 0.1, delay: 0.3, duplicate: 0.2, reorder: 0.5 };

  constructor(readonly random: () => number) {}

  calm(): void {
    this.partitioned.clear();
    this.faults = { drop: 0, lostResponse: 0, delay: 0, duplicate: 0, reorder: 0 };
  }

  chance(p: number): boolean {
    return this.random() < p;
  }

  wrap(relay: Relay): Relay {
    return new FaultyRelay(relay, this);
  }
}

class FaultyRelay implements Relay {
  constructor(
    private readonly inner: Relay,
    private readonly net: Network,
  ) {}

  get self(): DeviceId {
    return this.inner.self;
  }

  get location(): string {
    return `faulty:${this.inner.location}`;
  }

  register(publicKey: string): Promise<void> {
    return this.call(() => this.inner.register(publicKey));
  }

  async push(ops: readonly OpRecord[], authentic?: HeaderCheck): Promise<PushResult | Gap> {
    const result = await this.call(() => this.inner.push(ops, authentic));
    // A gap wrote nothing: only an answer to a push that was applied is lost (and the seeded
    // schedules draw their faults as they did when a gap was a thrown failure).
    if ('gap' in result) return result;
    if (this.net.chance(this.net.faults.lostResponse)) throw unavailable('the push response was lost');
    return result;
  }

  async pull(since: SeqFrontier, limit: number, authentic?: HeaderCheck): Promise<PullPage | Truncated> {
    const page = await this.call(() => this.inner.pull(since, limit, authentic));
    if ('truncated' in page) return page;
    let ops = [...page.ops];
    let more = page.more;
    if (this.net.chance(this.net.faults.delay)) {
      ops = ops.slice(0, Math.floor(this.net.random() * (ops.length + 1)));
      more = false;
    }
    for (const op of [...ops]) if (this.net.chance(this.net.faults.duplicate)) ops.push(op);
    if (this.net.chance(this.net.faults.reorder)) {
      for (let i = ops.length - 1; i > 0; i--) {
        const j = Math.floor(this.net.random() * (i + 1));
        [ops[i], ops[j]] = [ops[j]!, ops[i]!];
      }
    }
    return { ops, more };
  }

  head(device: DeviceId): Promise<number> {
    return this.call(() => this.inner.head(device));
  }

  async ack(acked: SeqFrontier): Promise<void> {
    await this.call(() => this.inner.ack(acked));
    if (this.net.chance(this.net.faults.lostResponse)) throw unavailable('the ack response was lost');
  }

  roster() {
    return this.call(() => this.inner.roster());
  }

  repairs(authentic?: HeaderCheck) {
    return this.call(() => this.inner.repairs(authentic));
  }

  restartAbove(anchor: ChainHead, authentic?: HeaderCheck) {
    return this.call(() => this.inner.restartAbove(anchor, authentic));
  }

  reportDamage(damage: Damage) {
    return this.call(() => this.inner.reportDamage(damage));
  }

  restoreCheckpoint(file: CheckpointFile) {
    return this.call(() => this.inner.restoreCheckpoint(file));
  }

  putCheckpoint(file: CheckpointFile): Promise<boolean> {
    return this.call(() => this.inner.putCheckpoint(file));
  }

  latestCheckpoint(covering?: Covering, authentic?: HeaderCheck) {
    return this.call(() => this.inner.latestCheckpoint(covering, authentic));
  }

  readCheckpoint(hash: string) {
    return this.call(() => this.inner.readCheckpoint(hash));
  }

  checkpointBytes(hash: string) {
    return this.call(() => this.inner.checkpointBytes(hash));
  }

  gc(bounds: GcBounds) {
    return this.call(() => this.inner.gc(bounds));
  }

  watch(onChange: () => void) {
    return this.inner.watch(onChange);
  }

  anomalies() {
    return this.inner.anomalies();
  }

  bytes(): Promise<number> {
    return this.inner.bytes();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async call<T>(request: () => Promise<T>): Promise<T> {
    if (this.net.partitioned.has(this.inner.self)) throw unavailable(`device ${this.inner.self} is partitioned`);
    if (this.net.chance(this.net.faults.drop)) throw unavailable('the request was dropped');
    return request();
  }
}

function unavailable(reason: string): OpsyncError {
  return new OpsyncError('relay_unavailable', `The relay is out of reach: ${reason}.`);
}
