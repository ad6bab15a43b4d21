import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { FSWatcher } from 'chokidar';
import type { CoreCrypto } from '../../src/oplog/core-crypto.js';
import { seqFrontierToJson, type SeqFrontier } from '../../src/oplog/frontier.js';
import { isDeviceId, type DeviceId } from '../../src/oplog/ids.js';
import type { ChainHead, OpRecord } from '../../src/oplog/op-record.js';
import { OpsyncError } from '../../src/util/opsync-error.js';
import { DEFAULT_EVICTION_HORIZON_MS, type RosterEntry } from '../../src/oplog/roster.js';
import { createFileDurable, ensureDir, exists, openUntrusted, writeFileAtomic, writeFileDurable } from '../../src/platform/durable-fs.js';
import { checkpointFileBytes, readCheckpointChunks, replaceCheckpointBytes, writeCheckpointBytes } from '../port/checkpoint-files.js';
import { checkRestartAnchor, planPush } from '../port/push-rules.js';
import { assertAcksMonotone, concurrentWriter, keyConflict, notRegistered } from '../port/relay-errors.js';
import { checkpointHead, collectableThrough, latestCovering, PageBuilder, rosterView, staleCheckpoints } from '../port/relay-state.js';
import type {
  CheckpointFile,
  CheckpointHeaderJson,
  CheckpointStream,
  Covering,
  Damage,
  Gap,
  GcBounds,
  GcResult,
  HeaderCheck,
  PullPage,
  PushResult,
  Relay,
  Repairs,
  RosterView,
  Truncated,
  Watch,
} from '../port/relay.js';
import { Anomalies } from './anomalies.js';
import { FolderReads } from './folder-reads.js';
import { watchFolder } from './folder-watch.js';
import { RelayFolder } from './relay-folder.js';
import { encodeSegment, segmentName, segmentRuns } from './segment-codec.js';
import { end, seqOfName } from './segment-folders.js';
import { pullDevice } from './device-pull.js';

export { RELAY_LAYOUT_VERSION } from './relay-folder.js';

/**
 * The directory relay (proposals/relay.md): a folder shared by the devices, with one writer per
 * file and no lock, so it also works inside a synced folder.
 *
 *     relay.json                                {"opsync_relay":1,"relay_id":…} (a fresh uuid per relay)
 *     devices/<device_id>/device.json           public key, added time (written once)
 *     devices/<device_id>/ops/<first seq>.jsonl immutable segments (temp + fsync + rename)
 *     devices/<device_id>/ack.json              acked frontier and last-seen time (temp + rename)
 *     devices/<device_id>/push-<seq>            empty; the newest push, a hint for watchers
 *     devices/<device_id>/damage.json           where this device, reading, is stopped by damage (temp + rename)
 *     checkpoints/<checkpoint_hash>.jsonl       immutable checkpoints
 *
 * Everything read from the folder is untrusted: files outside the layout (editor leftovers,
 * `*.sync-conflict-*` copies) are ignored and counted, malformed segments yield their valid
 * prefix and are counted, and readers verify chains and signatures themselves.
 *
 * A relay folder that vanishes under a running daemon (deleted, or a share that is not mounted)
 * is not re-created: every operation fails with `relay_unavailable` saying so, and the device's
 * ops wait in its journal. Once the folder is back, the handle forgets what it read from the old
 * one and watches again; the session registers the device again when the relay answers that it
 * does not know it (proposals/relay.md §A relay folder that vanishes).
 *
 * The folder as a place — its identity, and whether it vanished or was replaced — is
 * `RelayFolder`; what a handle read from it is `FolderReads` (the ops folders are
 * `SegmentFolders`); the repair of damaged files, between the readers that report damage and the
 * writer that mends it, is `directory-repair.ts`; watching and push hints are `folder-watch.ts`.
 */
/** Reads check first that the relay folder is still the one this handle read (see `guard`). */
const VERIFY = true;

export interface DirectoryRelayOptions {
  readonly root: string;
  readonly self: DeviceId;
  readonly crypto: CoreCrypto;
  readonly now?: () => number;
  readonly horizonMs?: number;
}

export class DirectoryRelay implements Relay {
  readonly self: DeviceId;
  readonly location: string;
  private readonly crypto: CoreCrypto;
  private readonly now: () => number;
  private readonly horizonMs: number;
  private readonly ignored: Anomalies;
  /** What this handle read from the folder; replaced wholesale when the folder is. */
  private reads: FolderReads;
  /** The key this device registered with (`register`); its own ops on the relay count only when they verify under it. */
  private ownKey: string | null = null;
  private reattaching: Promise<void> | null = null;
  private watching: { readonly onChange: () => void; watcher: FSWatcher } | null = null;

  private constructor(
    private readonly folder: RelayFolder,
    options: DirectoryRelayOptions,
  ) {
    this.self = options.self;
    this.location = options.root;
    this.crypto = options.crypto;
    this.now = options.now ?? Date.now;
    this.horizonMs = options.horizonMs ?? DEFAULT_EVICTION_HORIZON_MS;
    this.ignored = new Anomalies(options.root);
    this.reads = this.freshReads();
  }

  /** Opens (creating its layout if needed) the relay folder at `root`. */
  static async open(options: DirectoryRelayOptions): Promise<DirectoryRelay> {
    return new DirectoryRelay(await RelayFolder.open(options.root, options.self), options);
  }

  register(publicKey: string): Promise<void> {
    // The key this handle's own ops must verify under: a head on the relay rests on nothing else.
    this.ownKey = publicKey;
    return this.guard(async () => {
      const dir = this.folder.deviceDir(this.self);
      await ensureDir(join(dir, 'ops'));
      await this.folder.assertOwnFolders();
      await this.folder.removeLeftovers();
      const text = JSON.stringify({ opsync_device: 1, device_id: this.self, public_key: publicKey, added_ms: this.now() }) + '\n';
      if (await createFileDurable(join(dir, 'device.json'), text)) return;
      const existing = await this.reads.deviceFile(this.self);
      if (!existing)
        throw new OpsyncError('relay_invalid', `${join(dir, 'device.json')} is damaged; this device cannot register.`, {
          device_id: this.self,
        });
      if (existing.publicKey !== publicKey) throw keyConflict(this.self);
    });
  }

  push(ops: readonly OpRecord[], authentic?: HeaderCheck): Promise<PushResult | Gap> {
    // A push checks first that the folder is the one this handle read, as reads do: planned from
    // the head it kept of a folder since restored from an older backup, it would write its ops
    // above a hole (the simulation on a relay folder found a device's chain starting at seq 4).
    return this.guard(async () => {
      await this.folder.assertOwnFolders();
      const restored = await this.reads.repair.restore(ops);
      const segments = await this.reads.folders.segments(this.self);
      const plan = await planPush(
        {
          self: this.self,
          publicKey: await this.reads.publicKey(),
          head: await this.reads.folders.ownHead(),
          floor: segments[0]?.firstSeq ?? 0,
          heldOpId: async (seq) => (await this.reads.folders.heldOp(seq))?.op_id,
          checkpointHead: async (seq) => checkpointHead(await this.reads.checkpointHeaders(), this.self, seq, authentic),
        },
        ops,
        this.crypto,
      );
      if ('gap' in plan) return plan;
      // The segment holding the op the push continues from, when the relay holds it.
      const below = plan.fresh.length > 0 ? segments.findLast((segment) => segment.firstSeq < plan.fresh[0]!.seq) : undefined;
      // Segment by segment, each complete or absent: after a crash between two, the next push
      // finds the first ones held and writes the rest.
      const written: string[] = [];
      for (const run of segmentRuns(plan.fresh)) {
        const first = run[0]!.seq;
        const path = join(this.reads.folders.opsDir(this.self), segmentName(first));
        const text = encodeSegment(this.self, run);
        if (!(await createFileDurable(path, text))) {
          if (await this.reads.folders.ownSigned(path, first)) throw concurrentWriter(this.self, first);
          // Only damage, or ops this device never signed, stand at this name: this push takes its place.
          await writeFileDurable(path, text);
        }
        written.push(path);
        this.reads.folders.appended(path, run);
      }
      if (below && !(await exists(below.path))) return this.unwriteAboveHole(written, plan.fresh[0]!.seq);
      if (plan.fresh.length > 0 || restored) await this.reads.hints.hint((await this.reads.folders.ownHead())!.seq);
      return { pushed: plan.fresh.length, deduped: plan.deduped };
    }, VERIFY);
  }

  /**
   * The segment the push continued from vanished while it wrote (the folder restored from a
   * backup under it, or the file deleted): what it wrote would stand above a hole. It is removed
   * again, and the push answers a gap, so that the device pushes again from the relay's head.
   */
  private async unwriteAboveHole(written: readonly string[], first: number): Promise<Gap> {
    for (const path of written) {
      await rm(path, { force: true });
      this.reads.folders.forgetFile(path);
    }
    this.reads.folders.forgetOwn();
    await this.reads.folders.listing(this.self, true);
    return { gap: { device_id: this.self, head: (await this.reads.folders.ownHead())?.seq ?? -1, offered: first } };
  }

  pull(since: SeqFrontier, limit: number, authentic?: HeaderCheck): Promise<PullPage | Truncated> {
    return this.guard(async () => {
      const page = new PageBuilder(limit);
      for (const device of await this.reads.deviceIds()) {
        if (device === this.self) continue;
        const read = await pullDevice(this.reads, device, since.get(device) ?? -1, page, authentic);
        if (read === 'full') break;
        if (read !== 'read') return read;
      }
      await this.reads.damage.write();
      return page.page();
    }, VERIFY);
  }

  head(device: DeviceId): Promise<number> {
    return this.guard(async () => {
      if (!isDeviceId(device)) return -1;
      if (device !== this.self) return end((await this.reads.folders.listing(device)).segments.at(-1));
      // Its own folder is read again too: a pump asks now and then whether the relay still holds
      // every op this device pushed (a folder restored from an older backup does not say). Its
      // head is the newest op it signed: a file claiming more proves nothing.
      await this.reads.folders.listing(device, true);
      return (await this.reads.folders.ownHead())?.seq ?? -1;
    }, VERIFY);
  }

  /** This device's ranges that readers report (in their damage.json) and that are damaged here too (`WriterRepair`). */
  repairs(authentic?: HeaderCheck): Promise<Repairs> {
    // This runs on every pump: while watching, it answers from memory until a report changes
    // (and without the replaced-folder check, which the pump's pull makes).
    return this.guard(async () => {
      if (this.reads.repair.stale(this.watching !== null)) await this.reads.repair.refresh(() => this.reads.damageReports(), authentic);
      return this.reads.repair.repairs();
    });
  }

  restoreCheckpoint(file: CheckpointFile): Promise<void> {
    return this.guard(async () => {
      await this.folder.assertOwnFolders();
      const path = this.folder.checkpointPath(file.header.checkpoint_hash);
      await replaceCheckpointBytes(path, checkpointFileBytes(file));
      this.reads.forgetCheckpoint(path);
    });
  }

  restartAbove(anchor: ChainHead, authentic?: HeaderCheck): Promise<void> {
    return this.guard(async () => {
      // A relay replaced by an empty one no longer knows this device: registering comes first.
      if (!(await this.reads.deviceFile(this.self))) throw notRegistered(this.self);
      await this.folder.assertOwnFolders();
      checkRestartAnchor(this.self, anchor, checkpointHead(await this.reads.checkpointHeaders(), this.self, anchor.seq, authentic));
      const dir = this.reads.folders.opsDir(this.self);
      for (const name of await readdir(dir)) {
        if (seqOfName(name) < 0) continue;
        await rm(join(dir, name), { force: true });
        this.reads.folders.forgetFile(join(dir, name));
      }
      this.reads.folders.restarted();
      this.reads.repair.restarted();
    });
  }

  reportDamage(damage: Damage): Promise<void> {
    return this.guard(async () => {
      if ('checkpoint' in damage) await this.reads.damage.checkpointDamaged(damage.checkpoint);
      else this.reads.damage.stop(damage.device, damage.seq);
      await this.reads.damage.write();
    });
  }

  ack(acked: SeqFrontier): Promise<void> {
    return this.guard(async () => {
      const device = await this.reads.deviceFile(this.self);
      if (!device) throw notRegistered(this.self);
      await this.folder.assertOwnFolders();
      const current = this.reads.ownAck ??
        (await this.reads.ack(this.self)) ?? { acked: new Map<DeviceId, number>(), lastSeenMs: device.addedMs };
      assertAcksMonotone(this.self, current.acked, acked);
      const next = { acked: new Map([...current.acked, ...acked]), lastSeenMs: this.now() };
      const text = JSON.stringify({ opsync_ack: 1, acked: seqFrontierToJson(next.acked), last_seen_ms: next.lastSeenMs }) + '\n';
      // An ack lost in a crash is harmless: it only makes the stable frontier lag until the next one.
      await writeFileAtomic(join(this.folder.deviceDir(this.self), 'ack.json'), text);
      this.reads.ownAck = next;
      this.reads.damage.acked(next.acked);
      await this.reads.damage.write();
    });
  }

  roster(): Promise<RosterView> {
    return this.guard(async () => {
      const entries: Array<Omit<RosterEntry, 'status'>> = [];
      const floor = new Map<DeviceId, number>();
      for (const device of await this.reads.deviceIds()) {
        const file = await this.reads.deviceFile(device);
        if (!file) continue;
        const ack = await this.reads.ack(device);
        entries.push({
          device_id: device,
          public_key: file.publicKey,
          added_ms: file.addedMs,
          last_seen_ms: ack?.lastSeenMs ?? file.addedMs,
          acked: ack?.acked ?? new Map(),
        });
        floor.set(device, (await this.reads.folders.listing(device)).floor);
      }
      return rosterView(entries, floor, this.now(), this.horizonMs);
    }, VERIFY);
  }

  putCheckpoint(file: CheckpointFile): Promise<boolean> {
    return this.guard(async () => {
      await this.folder.assertOwnFolders();
      return writeCheckpointBytes(this.folder.checkpointPath(file.header.checkpoint_hash), checkpointFileBytes(file));
    });
  }

  latestCheckpoint(covering?: Covering, authentic?: HeaderCheck): Promise<CheckpointHeaderJson | null> {
    return this.guard(async () => latestCovering(await this.reads.checkpointHeaders(), covering, authentic), VERIFY);
  }

  readCheckpoint(hash: string): Promise<CheckpointStream | null> {
    return this.guard(async () => {
      const path = this.folder.checkpointPath(hash);
      const header = await this.reads.checkpointHeader(path);
      if (!header) return null;
      return { header, chunks: readCheckpointChunks(path) };
    }, VERIFY);
  }

  checkpointBytes(hash: string): Promise<AsyncIterable<Uint8Array> | null> {
    return this.guard(async () => {
      const path = this.folder.checkpointPath(hash);
      if (!(await this.reads.checkpointHeader(path))) return null;
      return (await openUntrusted(path)).createReadStream() as AsyncIterable<Uint8Array>;
    }, VERIFY);
  }

  gc(bounds: GcBounds): Promise<GcResult> {
    return this.guard(async () => {
      await this.folder.assertOwnFolders();
      const view = await this.roster();
      const through = collectableThrough(this.self, view, bounds.verified);
      const segments = await this.reads.folders.segments(this.self);
      let droppedOps = 0;
      for (const segment of segments.slice(0, -1)) {
        if (end(segment) > through) break;
        await rm(segment.path, { force: true });
        this.reads.folders.forgetFile(segment.path);
        droppedOps += segment.count;
      }
      this.reads.folders.forget(this.self);
      const stale = staleCheckpoints(await this.reads.checkpointHeaders(), bounds.authentic);
      for (const header of stale) {
        const path = this.folder.checkpointPath(header.checkpoint_hash);
        await rm(path, { force: true });
        this.reads.forgetCheckpoint(path);
      }
      return { droppedOps, droppedCheckpoints: stale.length };
    }, VERIFY);
  }

  async watch(onChange: () => void): Promise<Watch> {
    this.watching = { onChange, watcher: await this.startWatcher(onChange) };
    return {
      close: async () => {
        const watching = this.watching;
        this.watching = null;
        await watching?.watcher.close();
      },
    };
  }

  anomalies(): Readonly<Record<string, number>> {
    return this.ignored.counts();
  }

  bytes(): Promise<number> {
    return this.folder.bytes();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * Runs one relay operation (`RelayFolder.failure` names what went wrong). Reads first check
   * that relay.json still names the relay this handle read from (`verify`): a replaced folder
   * would otherwise be read through stale listings. So do pushes, which plan from this handle's
   * own head; other writes find out when they fail. A folder replaced while in use is attached
   * to, and the operation tried once more.
   */
  private async guard<T>(operation: () => Promise<T>, verify = false): Promise<T> {
    try {
      const stale = this.folder.detached || (verify && !(await this.folder.same()));
      if (stale) await (this.reattaching ??= this.reattach().finally(() => (this.reattaching = null)));
      return await operation();
    } catch (error) {
      const failure = await this.folder.failure(error);
      if (failure.kind === 'failed') throw failure.error;
      return this.guard(operation);
    }
  }

  /**
   * The folder is back, possibly as a different relay (re-created by another device): nothing
   * read from the old one is trusted (the session registers the device again when the relay
   * says it does not know it), and the watcher, which stopped when the folder vanished, starts
   * again.
   */
  private async reattach(): Promise<void> {
    await this.folder.attach();
    this.reads = this.freshReads();
    if (this.watching) {
      await this.watching.watcher.close();
      this.watching.watcher = await this.startWatcher(this.watching.onChange);
    }
    this.folder.detached = false;
  }

  private freshReads(): FolderReads {
    return new FolderReads(this.folder, this.ignored, this.crypto, () => this.ownKey);
  }

  private startWatcher(onChange: () => void): Promise<FSWatcher> {
    return watchFolder(this.folder, { changed: onChange, damageReported: () => this.reads.repair.reportsChanged() });
  }
}
