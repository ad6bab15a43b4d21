import { readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, join, sep } from 'node:path';
import { watch as chokidarWatch, type FSWatcher } from 'chokidar';
import { v4 as uuidv4 } from 'uuid';
import type { CoreCrypto } from '../src/oplog/core-crypto.js';
import { parseSeqFrontier, seqFrontierToJson, type SeqFrontier } from '../src/oplog/frontier.js';
import { isDeviceId, type DeviceId } from '../src/oplog/ids.js';
import type { ChainHead, OpRecord } from '../src/oplog/op-record.js';
import { isOpsyncError, OpsyncError } from '../src/oplog/opsync-error.js';
import { DEFAULT_EVICTION_HORIZON_MS, type RosterEntry } from '../src/oplog/roster.js';
import { Anomalies } from './anomalies.js';
import {
  CHECKPOINT_FILE,
  checkpointFileBytes,
  checkpointFileName,
  readCheckpointChunks,
  readCheckpointHeader,
  replaceCheckpointBytes,
  writeCheckpointBytes,
} from './checkpoint-files.js';
import { DAMAGE_FILE, decodeDamageReport, type DamageReport } from './damage-report.js';
import { ReaderDamage, WriterRepair } from './directory-repair.js';
import {
  assertRealDirs,
  createEmptyFile,
  createFileDurable,
  ensureDir,
  exists,
  openUntrusted,
  readJsonObject,
  TEMP_PREFIX,
  whyNotWritable,
  writeFileAtomic,
  writeFileDurable,
} from './durable-fs.js';
import { checkRestartAnchor, planPush } from './push-rules.js';
import { assertAcksMonotone, concurrentWriter, frontierTruncated, keyConflict, notRegistered } from './relay-errors.js';
import {
  checkpointHead,
  collectableThrough,
  headerFrontier,
  latestCovering,
  PageBuilder,
  rosterView,
  staleCheckpoints,
} from './relay-state.js';
import {
  type CheckpointFile,
  type Covering,
  type CheckpointHeaderJson,
  type CheckpointStream,
  type GcBounds,
  type GcResult,
  type HeaderCheck,
  type PullPage,
  type PushResult,
  type Relay,
  type Damage,
  type Repairs,
  type RosterView,
  type Watch,
} from './relay.js';
import { encodeSegment, segmentName, segmentRuns } from './segment-codec.js';
import { end, SegmentFolders, seqOfName } from './segment-folders.js';

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
 * Reading the ops folders is `SegmentFolders`; the repair of damaged files, between the readers
 * that report damage and the writer that mends it, is `directory-repair.ts`.
 */
export const RELAY_LAYOUT_VERSION = 1;

/** Reads check first that the relay folder is still the one this handle read (see `guard`). */
const VERIFY = true;

/** Name prefix of push hints in a device folder. */
const PUSH_HINT = 'push-';

/** A temporary file in the shared checkpoints folder untouched for this long is a write a crash interrupted. */
const ABANDONED_WRITE_MS = 60 * 60 * 1000;

export interface DirectoryRelayOptions {
  readonly root: string;
  readonly self: DeviceId;
  readonly crypto: CoreCrypto;
  readonly now?: () => number;
  readonly horizonMs?: number;
}

interface DeviceFile {
  readonly publicKey: string;
  readonly addedMs: number;
}

export class DirectoryRelay implements Relay {
  readonly self: DeviceId;
  readonly location: string;
  private readonly crypto: CoreCrypto;
  private readonly now: () => number;
  private readonly horizonMs: number;
  private readonly ignored: Anomalies;
  /** The devices' ops folders as read (segments are immutable, so their headers are kept). */
  private folders!: SegmentFolders;
  /** Checkpoint headers by path (checkpoint files are immutable too). */
  private readonly checkpointHeaders = new Map<string, CheckpointHeaderJson | null>();
  private readonly deviceFiles = new Map<DeviceId, DeviceFile>();
  private ownAck: { acked: Map<DeviceId, number>; lastSeenMs: number } | null = null;
  /** The key this device registered with (`register`); its own ops on the relay count only when they verify under it. */
  private ownKey: string | null = null;
  /** The push hint this device left last (null until its first push in this process). */
  private lastHint: string | null = null;
  /** The `relay_id` of relay.json ("" for relays made before ids), to notice a replaced folder. */
  private relayId = '';
  /** relay.json's inode and mtime when its id was last read: a replaced file is a new inode. */
  private marker: { readonly ino: number; readonly mtimeMs: number } | null = null;
  /** Set when the folder was found missing or replaced; cleared once this handle re-attached. */
  private detached = false;
  private reattaching: Promise<void> | null = null;
  private watching: { readonly onChange: () => void; watcher: FSWatcher } | null = null;
  /** What stops this device, reading (its damage.json). */
  private damage!: ReaderDamage;
  /** This device's damaged ranges that readers reported: a push offering them writes them again. */
  private repair!: WriterRepair;

  private constructor(options: DirectoryRelayOptions) {
    this.self = options.self;
    this.location = options.root;
    this.crypto = options.crypto;
    this.now = options.now ?? Date.now;
    this.horizonMs = options.horizonMs ?? DEFAULT_EVICTION_HORIZON_MS;
    this.ignored = new Anomalies(options.root);
    this.forgetRead();
  }

  /** Opens (creating its layout if needed) the relay folder at `root`. */
  static async open(options: DirectoryRelayOptions): Promise<DirectoryRelay> {
    const relay = new DirectoryRelay(options);
    const marker = join(options.root, 'relay.json');
    try {
      await ensureDir(join(options.root, 'devices'));
      await ensureDir(join(options.root, 'checkpoints'));
      await createFileDurable(marker, JSON.stringify({ opsync_relay: RELAY_LAYOUT_VERSION, relay_id: uuidv4() }) + '\n');
    } catch (error) {
      throw new OpsyncError('config_invalid', `The relay folder ${options.root} cannot be created or written: ${whyNotWritable(error)}.`, {
        location: options.root,
      });
    }
    const id = await relay.currentId();
    if (id === null) {
      const version = (await readJsonObject(marker))?.opsync_relay;
      throw new OpsyncError(
        'relay_invalid',
        `${options.root} is not an opsync relay of layout version ${RELAY_LAYOUT_VERSION} (relay.json says ${JSON.stringify(version)}).`,
        {
          location: options.root,
        },
      );
    }
    relay.relayId = id;
    relay.marker = await relayFileIdentity(options.root);
    return relay;
  }

  register(publicKey: string): Promise<void> {
    // The key this handle's own ops must verify under: a head on the relay rests on nothing else.
    this.ownKey = publicKey;
    return this.guard(async () => {
      const dir = this.deviceDir(this.self);
      await ensureDir(join(dir, 'ops'));
      await this.assertOwnFolders();
      await this.removeLeftovers();
      const text = JSON.stringify({ opsync_device: 1, device_id: this.self, public_key: publicKey, added_ms: this.now() }) + '\n';
      if (await createFileDurable(join(dir, 'device.json'), text)) return;
      const existing = await this.deviceFile(this.self);
      if (!existing)
        throw new OpsyncError('relay_invalid', `${join(dir, 'device.json')} is damaged; this device cannot register.`, {
          device_id: this.self,
        });
      if (existing.publicKey !== publicKey) throw keyConflict(this.self);
    });
  }

  push(ops: readonly OpRecord[], authentic?: HeaderCheck): Promise<PushResult> {
    // A push checks first that the folder is the one this handle read, as reads do: planned from
    // the head it kept of a folder since restored from an older backup, it would write its ops
    // above a hole (the simulation on a relay folder found a device's chain starting at seq 4).
    return this.guard(async () => {
      await this.assertOwnFolders();
      const restored = await this.repair.restore(ops);
      const segments = await this.folders.segments(this.self);
      const plan = await planPush(
        {
          self: this.self,
          publicKey: await this.publicKey(),
          head: await this.folders.ownHead(),
          floor: segments[0]?.firstSeq ?? 0,
          heldOpId: async (seq) => (await this.folders.heldOp(seq))?.op_id,
          checkpointHead: async (seq) => checkpointHead(await this.checkpointHeaderList(), this.self, seq, authentic),
        },
        ops,
        this.crypto,
      );
      // The segment holding the op the push continues from, when the relay holds it.
      const below = plan.fresh.length > 0 ? segments.findLast((segment) => segment.firstSeq < plan.fresh[0]!.seq) : undefined;
      // Segment by segment, each complete or absent: after a crash between two, the next push
      // finds the first ones held and writes the rest.
      const written: string[] = [];
      for (const run of segmentRuns(plan.fresh)) {
        const first = run[0]!.seq;
        const path = join(this.folders.opsDir(this.self), segmentName(first));
        const text = encodeSegment(this.self, run);
        if (!(await createFileDurable(path, text))) {
          if (await this.folders.ownSigned(path, first)) throw concurrentWriter(this.self, first);
          // Only damage, or ops this device never signed, stand at this name: this push takes its place.
          await writeFileDurable(path, text);
        }
        written.push(path);
        this.folders.appended(path, run);
      }
      if (below && !(await exists(below.path))) await this.unwriteAboveHole(written, plan.fresh[0]!.seq);
      if (plan.fresh.length > 0 || restored) await this.hintPush((await this.folders.ownHead())!.seq);
      return { pushed: plan.fresh.length, deduped: plan.deduped };
    }, VERIFY);
  }

  /**
   * The segment the push continued from vanished while it wrote (the folder restored from a
   * backup under it, or the file deleted): what it wrote would stand above a hole. It is removed
   * again, and the push refused as a gap, so that the device pushes again from the relay's head.
   */
  private async unwriteAboveHole(written: readonly string[], first: number): Promise<never> {
    for (const path of written) {
      await rm(path, { force: true });
      this.folders.forgetFile(path);
    }
    this.folders.forgetOwn();
    throw new OpsyncError(
      'relay_gap',
      `Device ${this.self} pushed from seq ${first}, but the relay folder lost the ops below it while the push wrote; it pushes again from what the relay holds.`,
      {
        device_id: this.self,
        offered: first,
      },
    );
  }

  pull(since: SeqFrontier, limit: number, authentic?: HeaderCheck): Promise<PullPage> {
    return this.guard(async () => {
      const page = new PageBuilder(limit);
      devices: for (const device of await this.deviceIds()) {
        if (device === this.self) continue;
        const { names, segments, floor, unreadable } = await this.folders.listing(device);
        const after = since.get(device) ?? -1;
        // An empty folder names no floor. A chain restarted with nothing above its anchor yet
        // starts above the op a checkpoint covers: a reader behind that must rebase onto it.
        if (names.size === 0) {
          const covered = await this.coveredUpTo(device, authentic);
          if (after < covered) throw frontierTruncated(device, after, covered + 1);
          continue;
        }
        if (end(segments.at(-1)) > after && after < floor - 1) {
          // Collected history: a checkpoint covers the device up to its floor, to rebase onto.
          // Otherwise the first files are lost (deleted, or left out of a backup): a stop for
          // the writer to push them again, as for any damage.
          if (await this.covered(device, floor - 1, authentic)) throw frontierTruncated(device, after, floor);
          this.damage.stop(device, after + 1);
          continue;
        }
        let seq = after;
        let stop: number | undefined;
        for (const segment of segments) {
          if (segment.firstSeq + segment.count - 1 <= seq) continue;
          if (segment.firstSeq > seq + 1) {
            stop = seq + 1;
            break;
          }
          const { header, ops, sizes } = await this.folders.read(segment);
          for (let i = 0; i < ops.length; i++) {
            const op = ops[i]!;
            if (op.seq <= seq) continue;
            if (!page.add(op, sizes[i]!)) break devices;
            seq = op.seq;
          }
          // Another file under a known name (its device restarted its chain on the relay): list again.
          if (header && header.count !== segment.count) {
            this.folders.forgetFile(segment.path);
            this.folders.forget(device);
            break;
          }
          if (ops.length < segment.count) {
            stop = seq + 1;
            break;
          }
        }
        // An unreadable segment file named above what could be read: the device's newest ops stand behind it.
        if (stop === undefined && seq >= floor - 1 && [...unreadable.keys()].some((path) => seqOfName(basename(path)) > seq))
          stop = seq + 1;
        if (stop !== undefined) this.damage.stop(device, stop);
      }
      await this.damage.write();
      return page.page();
    }, VERIFY);
  }

  head(device: DeviceId): Promise<number> {
    return this.guard(async () => {
      if (!isDeviceId(device)) return -1;
      if (device !== this.self) return end((await this.folders.listing(device)).segments.at(-1));
      // Its own folder is read again too: a pump asks now and then whether the relay still holds
      // every op this device pushed (a folder restored from an older backup does not say). Its
      // head is the newest op it signed: a file claiming more proves nothing.
      await this.folders.listing(device, true);
      return (await this.folders.ownHead())?.seq ?? -1;
    }, VERIFY);
  }

  /** This device's ranges that readers report (in their damage.json) and that are damaged here too (`WriterRepair`). */
  repairs(authentic?: HeaderCheck): Promise<Repairs> {
    // This runs on every pump: while watching, it answers from memory until a report changes
    // (and without the replaced-folder check, which the pump's pull makes).
    return this.guard(async () => {
      if (this.repair.stale(this.watching !== null)) await this.repair.refresh(() => this.damageReports(), authentic);
      return this.repair.repairs();
    });
  }

  restoreCheckpoint(file: CheckpointFile): Promise<void> {
    return this.guard(async () => {
      await this.assertOwnFolders();
      const path = this.checkpointPath(file.header.checkpoint_hash);
      await replaceCheckpointBytes(path, checkpointFileBytes(file));
      this.checkpointHeaders.delete(path);
    });
  }

  /** The damage reports of the other devices. */
  private async damageReports(): Promise<DamageReport[]> {
    const reports: DamageReport[] = [];
    for (const device of await this.deviceIds()) {
      const report = device === this.self ? null : await this.readDamage(device);
      if (report) reports.push(report);
    }
    return reports;
  }

  restartAbove(anchor: ChainHead, authentic?: HeaderCheck): Promise<void> {
    return this.guard(async () => {
      // A relay replaced by an empty one no longer knows this device: registering comes first.
      if (!(await this.deviceFile(this.self))) throw notRegistered(this.self);
      await this.assertOwnFolders();
      checkRestartAnchor(this.self, anchor, checkpointHead(await this.checkpointHeaderList(), this.self, anchor.seq, authentic));
      const dir = this.folders.opsDir(this.self);
      for (const name of await readdir(dir)) {
        if (seqOfName(name) < 0) continue;
        await rm(join(dir, name), { force: true });
        this.folders.forgetFile(join(dir, name));
      }
      this.folders.restarted();
      this.repair.restarted();
    });
  }

  reportDamage(damage: Damage): Promise<void> {
    return this.guard(async () => {
      if ('checkpoint' in damage) await this.damage.checkpointDamaged(damage.checkpoint);
      else this.damage.stop(damage.device, damage.seq);
      await this.damage.write();
    });
  }

  ack(acked: SeqFrontier): Promise<void> {
    return this.guard(async () => {
      const device = await this.deviceFile(this.self);
      if (!device) throw notRegistered(this.self);
      await this.assertOwnFolders();
      const current = this.ownAck ?? (await this.readAck(this.self)) ?? { acked: new Map<DeviceId, number>(), lastSeenMs: device.addedMs };
      assertAcksMonotone(this.self, current.acked, acked);
      const next = { acked: new Map([...current.acked, ...acked]), lastSeenMs: this.now() };
      const text = JSON.stringify({ opsync_ack: 1, acked: seqFrontierToJson(next.acked), last_seen_ms: next.lastSeenMs }) + '\n';
      // An ack lost in a crash is harmless: it only makes the stable frontier lag until the next one.
      await writeFileAtomic(join(this.deviceDir(this.self), 'ack.json'), text);
      this.ownAck = next;
      this.damage.acked(next.acked);
      await this.damage.write();
    });
  }

  roster(): Promise<RosterView> {
    return this.guard(async () => {
      const entries: Array<Omit<RosterEntry, 'status'>> = [];
      const floor = new Map<DeviceId, number>();
      for (const device of await this.deviceIds()) {
        const file = await this.deviceFile(device);
        if (!file) continue;
        const ack = await this.readAck(device);
        entries.push({
          device_id: device,
          public_key: file.publicKey,
          added_ms: file.addedMs,
          last_seen_ms: ack?.lastSeenMs ?? file.addedMs,
          acked: ack?.acked ?? new Map(),
        });
        floor.set(device, (await this.folders.listing(device)).floor);
      }
      return rosterView(entries, floor, this.now(), this.horizonMs);
    }, VERIFY);
  }

  putCheckpoint(file: CheckpointFile): Promise<boolean> {
    return this.guard(async () => {
      await this.assertOwnFolders();
      return writeCheckpointBytes(this.checkpointPath(file.header.checkpoint_hash), checkpointFileBytes(file));
    });
  }

  latestCheckpoint(covering?: Covering, authentic?: HeaderCheck): Promise<CheckpointHeaderJson | null> {
    return this.guard(async () => latestCovering(await this.checkpointHeaderList(), covering, authentic), VERIFY);
  }

  readCheckpoint(hash: string): Promise<CheckpointStream | null> {
    return this.guard(async () => {
      const path = this.checkpointPath(hash);
      const header = await this.checkpointHeader(path);
      if (!header) return null;
      return { header, chunks: readCheckpointChunks(path) };
    }, VERIFY);
  }

  checkpointBytes(hash: string): Promise<AsyncIterable<Uint8Array> | null> {
    return this.guard(async () => {
      const path = this.checkpointPath(hash);
      if (!(await this.checkpointHeader(path))) return null;
      return (await openUntrusted(path)).createReadStream() as AsyncIterable<Uint8Array>;
    }, VERIFY);
  }

  gc(bounds: GcBounds): Promise<GcResult> {
    return this.guard(async () => {
      await this.assertOwnFolders();
      const view = await this.roster();
      const through = collectableThrough(this.self, view, bounds.verified);
      const segments = await this.folders.segments(this.self);
      let droppedOps = 0;
      for (const segment of segments.slice(0, -1)) {
        if (end(segment) > through) break;
        await rm(segment.path, { force: true });
        this.folders.forgetFile(segment.path);
        droppedOps += segment.count;
      }
      this.folders.forget(this.self);
      const stale = staleCheckpoints(await this.checkpointHeaderList(), bounds.authentic);
      for (const header of stale) {
        const path = this.checkpointPath(header.checkpoint_hash);
        await rm(path, { force: true });
        this.checkpointHeaders.delete(path);
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

  private async startWatcher(onChange: () => void): Promise<FSWatcher> {
    const devices = join(this.location, 'devices');
    const own = this.deviceDir(this.self) + sep;
    // Depth 1 reaches each device's top-level files but not its ops folder: chokidar rescans a
    // folder on every event and watches each file in it, which grows costly with thousands of
    // segments. A push leaves a hint in the device's small folder, which is what is watched.
    const watcher = chokidarWatch([devices, join(this.location, 'checkpoints')], {
      ignoreInitial: true,
      depth: 1,
      ignored: (path: string) => basename(path).startsWith(TEMP_PREFIX) || (path + sep).startsWith(own),
    });
    watcher.on('add', (path: string) => {
      const name = basename(path);
      if (name === DAMAGE_FILE) this.repair.reportsChanged();
      if (name.startsWith(PUSH_HINT) || name === DAMAGE_FILE || CHECKPOINT_FILE.test(name)) onChange();
    });
    // A reader's damage report changed: the writer of the damaged ops pumps, and restores them;
    // a checkpoint file rewritten in place was restored: a reader it stopped tries again.
    watcher.on('change', (path: string) => {
      const name = basename(path);
      if (name === DAMAGE_FILE) this.repair.reportsChanged();
      if (name === DAMAGE_FILE || CHECKPOINT_FILE.test(name)) onChange();
    });
    // The relay folder vanished: a pump finds out and says so (chokidar stops watching it).
    watcher.on('unlinkDir', (path: string) => {
      if (path === devices) onChange();
    });
    try {
      await new Promise<void>((resolve, reject) => {
        watcher.once('ready', resolve);
        watcher.once('error', reject);
      });
    } catch (error) {
      await watcher.close();
      throw error;
    }
    // Later errors (a watched folder removed mid-scan) leave the pumps to report the relay's state.
    watcher.on('error', () => {});
    return watcher;
  }

  /**
   * Tells watchers that this device pushed (proposals/relay.md §Live sync): an empty file with a
   * fresh name, `push-<seq>`, in the device folder, replacing the previous one. A fresh name
   * because watchers coalesce rapid changes of one file and drop the last; a small folder
   * because they rescan a folder on every event. Nobody reads hints for data.
   */
  private async hintPush(seq: number): Promise<void> {
    const dir = this.deviceDir(this.self);
    // A restore hints at an unchanged head: the name alternates so that watchers see a new one.
    const hint = this.lastHint === `${PUSH_HINT}${seq}` ? `${PUSH_HINT}${seq}.again` : `${PUSH_HINT}${seq}`;
    if (this.lastHint !== null) {
      // One rename moves the hint to its fresh name: watchers see the new name appear.
      try {
        await rename(join(dir, this.lastHint), join(dir, hint));
        this.lastHint = hint;
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    await createEmptyFile(join(dir, hint));
    const stale = (await readdir(dir)).filter((name) => name.startsWith(PUSH_HINT) && name !== hint);
    await Promise.all(stale.map((name) => rm(join(dir, name), { force: true })));
    this.lastHint = hint;
  }

  anomalies(): Readonly<Record<string, number>> {
    return this.ignored.counts();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * Runs one relay operation. Named failures pass through; a failing folder is
   * `relay_unavailable`, with its own sentence when the relay folder is gone. Reads first check
   * that relay.json still names the relay this handle read from (`verify`): a replaced folder
   * would otherwise be read through stale listings. So do pushes, which plan from this handle's
   * own head; other writes find out when they fail.
   */
  private async guard<T>(operation: () => Promise<T>, verify = false): Promise<T> {
    try {
      const stale = this.detached || (verify && !(await this.sameRelay()));
      if (stale) await (this.reattaching ??= this.reattach().finally(() => (this.reattaching = null)));
      return await operation();
    } catch (error) {
      if (isOpsyncError(error)) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      // Out of file descriptors (a flood of connections): reading relay.json would fail too and look like a missing folder.
      if (code === 'EMFILE' || code === 'ENFILE') {
        throw new OpsyncError(
          'relay_unavailable',
          `The relay folder ${this.location} cannot be read now: too many files are open (${code}); sync resumes once some are closed.`,
          { relay: this.location },
        );
      }
      const id = await this.layoutId();
      if (id === this.relayId)
        throw new OpsyncError('relay_unavailable', `The relay folder ${this.location} failed: ${(error as Error).message}.`, {
          relay: this.location,
        });
      this.detached = true;
      if (id === null) throw this.missing();
      // Replaced by another relay while in use: attach to it and try once more.
      return this.guard(operation);
    }
  }

  /**
   * Whether the folder is still the one this handle read: one stat of relay.json. A relay.json
   * written again — even naming the same relay, as in a folder restored from a backup — means the
   * folder was put back in place: what this handle read and watched no longer holds (before, a
   * restored folder kept the watcher on the folder moved away, so readers' damage reports were
   * never seen and a hole the backup left in a device's chain stayed for good).
   */
  private async sameRelay(): Promise<boolean> {
    const seen = await relayFileIdentity(this.location);
    if (seen === null) return false;
    if (seen.ino === this.marker?.ino && seen.mtimeMs === this.marker.mtimeMs) return true;
    if (this.marker !== null) return false;
    if ((await this.currentId()) !== this.relayId) return false;
    this.marker = seen;
    return true;
  }

  /** The relay id in relay.json; null when the file is missing or not a relay marker of this layout. */
  private async currentId(): Promise<string | null> {
    const value = await readJsonObject(join(this.location, 'relay.json'));
    if (value?.opsync_relay !== RELAY_LAYOUT_VERSION) return null;
    return typeof value.relay_id === 'string' ? value.relay_id : '';
  }

  /** The relay id when the whole layout is there; null when the folder is gone (deleted, or a share not mounted). */
  private async layoutId(): Promise<string | null> {
    const folders = await Promise.allSettled(['devices', 'checkpoints'].map((folder) => stat(join(this.location, folder))));
    return folders.every((result) => result.status === 'fulfilled') ? this.currentId() : null;
  }

  private missing(): OpsyncError {
    return new OpsyncError(
      'relay_unavailable',
      `The relay folder ${this.location} is gone (deleted, or a share that is not mounted). This device keeps its ops in its journal and pushes them once the folder is back; it does not re-create the folder while running.`,
      { relay: this.location },
    );
  }

  /**
   * The folder is back, possibly as a different relay (re-created by another device): nothing
   * read from the old one is trusted (the session registers the device again when the relay
   * says it does not know it), and the watcher, which stopped when the folder vanished, starts
   * again.
   */
  private async reattach(): Promise<void> {
    const id = await this.layoutId();
    if (id === null) throw this.missing();
    this.relayId = id;
    this.marker = await relayFileIdentity(this.location);
    this.forgetRead();
    if (this.watching) {
      await this.watching.watcher.close();
      this.watching.watcher = await this.startWatcher(this.watching.onChange);
    }
    this.detached = false;
  }

  /** Starts over on what this handle read and wrote: at construction, and for a relay folder that was replaced. */
  private forgetRead(): void {
    this.folders = new SegmentFolders(join(this.location, 'devices'), this.self, this.ignored, this.crypto, () => this.ownKey);
    this.checkpointHeaders.clear();
    this.deviceFiles.clear();
    this.ownAck = null;
    this.lastHint = null;
    this.damage = new ReaderDamage(
      join(this.deviceDir(this.self), DAMAGE_FILE),
      (hash) => this.checkpointPath(hash),
      () => this.assertOwnFolders(),
    );
    this.repair = new WriterRepair(
      this.self,
      this.crypto,
      this.folders,
      () => this.publicKey(),
      (seq, authentic) => this.covered(this.self, seq, authentic),
    );
  }

  /** Whether a checkpoint on the relay covers `device` up to `seq`: its ops up to there may be collected. */
  private async covered(device: DeviceId, seq: number, authentic?: HeaderCheck): Promise<boolean> {
    return latestCovering(await this.checkpointHeaderList(), { device, seq }, authentic) !== null;
  }

  /** The furthest seq of `device` a checkpoint on the relay covers (-1: none covers it). */
  private async coveredUpTo(device: DeviceId, authentic?: HeaderCheck): Promise<number> {
    const headers = (await this.checkpointHeaderList()).filter((header) => authentic?.(header) ?? true);
    return Math.max(-1, ...headers.map((header) => headerFrontier(header)?.get(device)?.seq ?? -1));
  }

  /**
   * The folders this device writes into, and removes from, are real folders of the relay: a
   * symbolic link planted at `devices/<self>`, its `ops/` or `checkpoints/` would carry its
   * segments, acks and reports — and the removals of collection — outside the relay
   * (proposals/threat-model.md §Files). One lstat each, before every write.
   */
  private assertOwnFolders(): Promise<void> {
    const dir = this.deviceDir(this.self);
    const folders = [join(this.location, 'devices'), dir, join(dir, 'ops'), join(this.location, 'checkpoints')];
    return assertRealDirs(
      folders,
      (path) =>
        new OpsyncError(
          'relay_invalid',
          `${path} in the relay is not a folder (a symbolic link or a file stands there): this device writes nothing through it. Remove it; the device writes its files again.`,
          {
            location: path,
          },
        ),
    );
  }

  private async publicKey(): Promise<string | null> {
    return (await this.deviceFile(this.self))?.publicKey ?? null;
  }

  private deviceDir(device: DeviceId): string {
    return join(this.location, 'devices', device);
  }

  private checkpointPath(hash: string): string {
    return join(this.location, 'checkpoints', checkpointFileName(hash));
  }

  private async deviceIds(): Promise<DeviceId[]> {
    const names = await readdir(join(this.location, 'devices'));
    const ids: DeviceId[] = [];
    for (const name of names.sort()) {
      if (isDeviceId(name)) ids.push(name);
      else this.ignored.classify(join(this.location, 'devices', name));
    }
    return ids;
  }

  /**
   * Removes the temporary files of writes a crash interrupted (a segment may leave one of 32
   * MiB, a checkpoint one of hundreds): at registration, before this handle writes anything,
   * every one in this device's folders, and in the shared checkpoints folder those older than
   * any write takes (another device may be writing one now).
   */
  private async removeLeftovers(): Promise<void> {
    const own = [this.deviceDir(this.self), join(this.deviceDir(this.self), 'ops')];
    const shared = join(this.location, 'checkpoints');
    for (const dir of [...own, shared]) {
      for (const name of await readdir(dir)) {
        if (!name.startsWith(TEMP_PREFIX)) continue;
        const path = join(dir, name);
        const stale = dir !== shared || ((await stat(path).catch(() => null))?.mtimeMs ?? Infinity) < Date.now() - ABANDONED_WRITE_MS;
        if (stale) await rm(path, { force: true });
      }
    }
  }

  private async readDamage(device: DeviceId): Promise<DamageReport | null> {
    const path = join(this.deviceDir(device), DAMAGE_FILE);
    const value = await readJsonObject(path);
    if (value === undefined) return null;
    const report = decodeDamageReport(value);
    if (!report) this.ignored.note(path, 'damage_file_invalid');
    return report;
  }

  private async deviceFile(device: DeviceId): Promise<DeviceFile | null> {
    const cached = this.deviceFiles.get(device);
    if (cached) return cached;
    const path = join(this.deviceDir(device), 'device.json');
    const value = await readJsonObject(path);
    if (value === undefined) return null;
    if (!value || value.device_id !== device || typeof value.public_key !== 'string' || !Number.isSafeInteger(value.added_ms)) {
      this.ignored.note(path, 'device_file_invalid');
      return null;
    }
    const file = { publicKey: value.public_key, addedMs: value.added_ms as number };
    this.deviceFiles.set(device, file);
    return file;
  }

  private async readAck(device: DeviceId): Promise<{ acked: Map<DeviceId, number>; lastSeenMs: number } | null> {
    const path = join(this.deviceDir(device), 'ack.json');
    const value = await readJsonObject(path);
    if (value === undefined) return null;
    const acked = value ? parseSeqFrontier(value.acked) : null;
    if (!value || !acked || !Number.isSafeInteger(value.last_seen_ms)) {
      this.ignored.note(path, 'ack_file_invalid');
      return null;
    }
    return { acked: new Map(acked), lastSeenMs: value.last_seen_ms as number };
  }

  private async checkpointHeaderList(): Promise<CheckpointHeaderJson[]> {
    const dir = join(this.location, 'checkpoints');
    const headers: CheckpointHeaderJson[] = [];
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (!CHECKPOINT_FILE.test(name)) {
        this.ignored.classify(path);
        continue;
      }
      const header = await this.checkpointHeader(path, true);
      if (header) headers.push(header);
    }
    return headers;
  }

  /**
   * A checkpoint file's header, read once per file. `listed`: a listing has just seen the file;
   * otherwise a header read before is trusted only while the file is still there (another
   * device's collection may have removed it since).
   */
  private async checkpointHeader(path: string, listed = false): Promise<CheckpointHeaderJson | null> {
    if (this.checkpointHeaders.has(path)) {
      if (listed || (await exists(path))) return this.checkpointHeaders.get(path)!;
      this.checkpointHeaders.delete(path);
      return null;
    }
    let header: CheckpointHeaderJson | null;
    try {
      header = await readCheckpointHeader(path);
      if (header === null) return null;
    } catch {
      header = null;
    }
    if (header && header.checkpoint_hash !== CHECKPOINT_FILE.exec(basename(path))?.[1]) header = null;
    if (!header) this.ignored.note(path, 'checkpoint_invalid');
    this.checkpointHeaders.set(path, header);
    return header;
  }
}

/** relay.json's file identity, to tell when it was written again; null when it cannot be read. */
async function relayFileIdentity(root: string): Promise<{ readonly ino: number; readonly mtimeMs: number } | null> {
  const seen = await stat(join(root, 'relay.json')).catch(() => null);
  return seen && { ino: seen.ino, mtimeMs: seen.mtimeMs };
}
