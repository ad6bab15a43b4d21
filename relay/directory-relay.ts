import { createReadStream } from 'node:fs';
import { readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import { watch as chokidarWatch, type FSWatcher } from 'chokidar';
import { v4 as uuidv4 } from 'uuid';
import type { CoreCrypto } from '../src/oplog/core-crypto.js';
import { verifyChain } from '../src/oplog/chain.js';
import { parseSeqFrontier, seqFrontierToJson, type SeqFrontier } from '../src/oplog/frontier.js';
import { isDeviceId, type DeviceId, type OpId } from '../src/oplog/ids.js';
import { headOf, opIdHolds, type ChainHead, type OpRecord } from '../src/oplog/op-record.js';
import { isOpsyncError, OpsyncError } from '../src/oplog/opsync-error.js';
import { DEFAULT_EVICTION_HORIZON_MS, type RosterEntry } from '../src/oplog/roster.js';
import { CHECKPOINT_FILE, checkpointFileBytes, checkpointFileName, firstLine, readCheckpointChunks, readCheckpointHeader, writeCheckpointBytes } from './checkpoint-files.js';
import { DAMAGE_FILE, decodeDamageReport, encodeDamageReport, NO_DAMAGE, type DamageReport } from './damage-report.js';
import { createFileDurable, ensureDir, fsyncDir, readTextAtMost, TEMP_PREFIX, writeFileAtomic, writeFileDurable } from './durable-fs.js';
import { anchorFor, checkRestartAnchor, checkRestore, planPush } from './push-rules.js';
import { ackRegression, concurrentWriter, frontierTruncated, keyConflict, notRegistered } from './relay-errors.js';
import { checkpointHead, collectableThrough, newestFirst, PageBuilder, rosterView } from './relay-state.js';
import {
  CHECKPOINTS_KEPT,
  type CheckpointFile,
  type CheckpointHeaderJson,
  type CheckpointStream,
  type GcResult,
  type PullPage,
  type PushResult,
  type Relay,
  type Damage,
  type Repairs,
  type RosterView,
  type SeqRange,
  type Watch,
} from './relay.js';
import { decodeHeader, decodeSegment, encodeSegment, MAX_SEGMENT_BYTES, SEGMENT_NAME, segmentName, segmentRuns, type DecodedSegment, type SegmentHeader } from './segment-codec.js';

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

interface Segment extends SegmentHeader {
  readonly device: DeviceId;
  readonly path: string;
}

/** A device's ops folder as last listed. */
interface Listing {
  readonly names: Set<string>;
  /** The valid segments, in seq order. */
  readonly segments: Segment[];
  /**
   * The lowest seq a segment file is named for, valid or damaged: below it GC collected the ops.
   * A damaged segment is not a collected one — a reader stops before it instead of rebasing.
   */
  readonly floor: number;
  /** Segment files whose header could not be read, with the identity they had: read again once replaced. */
  readonly unreadable: ReadonlyMap<string, string>;
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
  /** Segment headers and checkpoint headers by path: both kinds of file are immutable. */
  private readonly headers = new Map<string, SegmentHeader | string>();
  private readonly checkpointHeaders = new Map<string, CheckpointHeaderJson | null>();
  private readonly deviceFiles = new Map<DeviceId, DeviceFile>();
  /** Each device's valid segments, kept until its ops folder lists differently. */
  private readonly listings = new Map<DeviceId, Listing>();
  /** Anomalous files by path, so each is counted once however often it is seen. */
  private readonly anomalous = new Map<string, string>();
  private ownAck: { acked: Map<DeviceId, number>; lastSeenMs: number } | null = null;
  /** The push hint this device left last (null until its first push in this process). */
  private lastHint: string | null = null;
  /** This device's newest op on the relay, once read (only this process writes it). */
  private ownHead: ChainHead | null | undefined = undefined;
  /** The `relay_id` of relay.json ("" for relays made before ids), to notice a replaced folder. */
  private relayId = '';
  /** relay.json's inode and mtime when its id was last read: a replaced file is a new inode. */
  private marker: { readonly ino: number; readonly mtimeMs: number } | null = null;
  /** Set when the folder was found missing or replaced; cleared once this handle re-attached. */
  private detached = false;
  private reattaching: Promise<void> | null = null;
  private watching: { readonly onChange: () => void; watcher: FSWatcher } | null = null;
  /**
   * Per device, the first seq this reader cannot get past: a damaged or missing segment (found
   * by `pull`) or an op that failed verification (`reportDamage`). A stop stands until this
   * device acks past it.
   */
  private readonly stopped = new Map<DeviceId, number>();
  /** Checkpoints this reader found damaged, with their file's identity then: a report stands until the file changes. */
  private readonly damagedCheckpoints = new Map<string, string>();
  /** The damage report as last written to this device's folder (null until read from it). */
  private reported: string | null = null;
  /** This device's ranges that readers reported and this handle found damaged: a push offering them writes them again. */
  private damagedOwn: readonly SeqRange[] = [];
  /** Checkpoints readers reported damaged, as `repairs` last read them. */
  private reportedCheckpoints: readonly string[] = [];
  /** Whether a damage report may have changed since `repairs` read them (always, without a watcher). */
  private reportsChanged = true;
  /** Whether `repairs` has checked this device's newest segment, which a push takes its head from. */
  private newestChecked = false;
  /** This device's segments found intact when a reader reported them, by path, with the file identity then. */
  private readonly intact = new Map<string, string>();

  private constructor(options: DirectoryRelayOptions) {
    this.self = options.self;
    this.location = options.root;
    this.crypto = options.crypto;
    this.now = options.now ?? Date.now;
    this.horizonMs = options.horizonMs ?? DEFAULT_EVICTION_HORIZON_MS;
  }

  /** Opens (creating its layout if needed) the relay folder at `root`. */
  static async open(options: DirectoryRelayOptions): Promise<DirectoryRelay> {
    const relay = new DirectoryRelay(options);
    await ensureDir(join(options.root, 'devices'));
    await ensureDir(join(options.root, 'checkpoints'));
    const marker = join(options.root, 'relay.json');
    await createFileDurable(marker, JSON.stringify({ opsync_relay: RELAY_LAYOUT_VERSION, relay_id: uuidv4() }) + '\n');
    const id = await relay.currentId();
    if (id === null) {
      const version = (await readJson(marker))?.opsync_relay;
      throw new OpsyncError('relay_invalid', `${options.root} is not an opsync relay of layout version ${RELAY_LAYOUT_VERSION} (relay.json says ${JSON.stringify(version)}).`, {
        location: options.root,
      });
    }
    relay.relayId = id;
    return relay;
  }

  register(publicKey: string): Promise<void> {
    return this.guard(async () => {
      const dir = this.deviceDir(this.self);
      await ensureDir(join(dir, 'ops'));
      await this.removeLeftovers();
      const text = JSON.stringify({ opsync_device: 1, device_id: this.self, public_key: publicKey, added_ms: this.now() }) + '\n';
      if (await createFileDurable(join(dir, 'device.json'), text)) return;
      const existing = await this.deviceFile(this.self);
      if (!existing) throw new OpsyncError('relay_invalid', `${join(dir, 'device.json')} is damaged; this device cannot register.`, { device_id: this.self });
      if (existing.publicKey !== publicKey) throw keyConflict(this.self);
    });
  }

  push(ops: readonly OpRecord[]): Promise<PushResult> {
    return this.guard(async () => {
      const restored = await this.restore(ops);
      const segments = await this.segments(this.self);
      if (this.ownHead === undefined) this.ownHead = await this.newestHead();
      const plan = await planPush(
        {
          self: this.self,
          publicKey: (await this.deviceFile(this.self))?.publicKey ?? null,
          head: this.ownHead,
          floor: segments[0]?.firstSeq ?? 0,
          heldOpId: async (seq) => (await this.heldOp(seq))?.op_id,
          checkpointHead: async (seq) => checkpointHead(await this.checkpointHeaderList(), this.self, seq),
        },
        ops,
        this.crypto,
      );
      // Segment by segment, each complete or absent: after a crash between two, the next push
      // finds the first ones held and writes the rest.
      for (const run of segmentRuns(plan.fresh)) {
        const first = run[0]!.seq;
        const path = join(this.deviceDir(this.self), 'ops', segmentName(first));
        const text = encodeSegment(this.self, run);
        if (!(await createFileDurable(path, text))) {
          if ((await this.readSegmentFile(path, first)).problem === null) throw concurrentWriter(this.self, first);
          // Only damage stands at this name (nobody can read it): this push takes its place.
          await writeFileDurable(path, text);
          this.headers.delete(path);
        }
        this.ownHead = headOf(run.at(-1)!);
        const own = this.listings.get(this.self);
        if (own) {
          own.names.add(segmentName(first));
          own.segments.push({ firstSeq: first, count: run.length, device: this.self, path });
        }
      }
      if (plan.fresh.length > 0 || restored) await this.hintPush(this.ownHead!.seq);
      return { pushed: plan.fresh.length, deduped: plan.deduped };
    });
  }

  pull(since: SeqFrontier, limit: number): Promise<PullPage> {
    return this.guard(async () => {
      const page = new PageBuilder(limit);
      devices: for (const device of await this.deviceIds()) {
        if (device === this.self) continue;
        const { segments, floor, unreadable } = await this.listing(device);
        const after = since.get(device) ?? -1;
        if (end(segments.at(-1)) > after && after < floor - 1) throw frontierTruncated(device, after, floor);
        let seq = after;
        let stop: number | undefined;
        for (const segment of segments) {
          if (segment.firstSeq + segment.count - 1 <= seq) continue;
          if (segment.firstSeq > seq + 1) {
            stop = seq + 1;
            break;
          }
          const { header, ops, sizes } = await this.readSegment(segment);
          for (let i = 0; i < ops.length; i++) {
            const op = ops[i]!;
            if (op.seq <= seq) continue;
            if (!page.add(op, sizes[i]!)) break devices;
            seq = op.seq;
          }
          // Another file under a known name (its device restarted its chain on the relay): list again.
          if (header && header.count !== segment.count) {
            this.headers.delete(segment.path);
            this.listings.delete(device);
            break;
          }
          if (ops.length < segment.count) {
            stop = seq + 1;
            break;
          }
        }
        // An unreadable segment file named above what could be read: the device's newest ops stand behind it.
        if (stop === undefined && seq >= floor - 1 && [...unreadable.keys()].some((path) => seqOfName(basename(path)) > seq)) stop = seq + 1;
        if (stop !== undefined) this.stopped.set(device, stop);
      }
      await this.writeDamageReport();
      return page.page();
    }, VERIFY);
  }

  head(device: DeviceId): Promise<number> {
    return this.guard(async () => {
      if (!isDeviceId(device)) return -1;
      const last = (await this.segments(device)).at(-1);
      return last ? last.firstSeq + last.count - 1 : -1;
    }, VERIFY);
  }

  /**
   * This device's ranges that readers report they cannot read (in their damage.json) and that
   * are damaged or missing here too; a reader whose own copy is damaged (a synced folder) is
   * not answered by rewriting an intact file. The first call of a process also checks this
   * device's newest segment: a push takes its head from it, so it is restored before anything.
   */
  repairs(): Promise<Repairs> {
    // This runs on every pump: while watching, it answers from memory until a report changes
    // (and without the replaced-folder check, which the pump's pull makes).
    return this.guard(async () => {
      if (!(this.watching && !this.reportsChanged && this.newestChecked)) await this.readRepairs();
      return { ops: this.damagedOwn, checkpoints: this.reportedCheckpoints };
    });
  }

  restoreCheckpoint(file: CheckpointFile): Promise<void> {
    return this.guard(async () => {
      const path = this.checkpointPath(file.header.checkpoint_hash);
      const temp = join(this.location, 'checkpoints', `${TEMP_PREFIX}${basename(path)}-${uuidv4()}`);
      await writeCheckpointBytes(temp, checkpointFileBytes(file));
      await rename(temp, path);
      await fsyncDir(dirname(path));
      this.checkpointHeaders.delete(path);
    });
  }

  /** Reads the readers' damage reports, and checks this device's newest segment once per process. */
  private async readRepairs(): Promise<void> {
    this.reportsChanged = false;
    const reported = new Set<number>();
    const checkpoints = new Set<string>();
    if (!this.newestChecked) {
      const newest = (await this.segments(this.self)).at(-1);
      if (newest && !(await this.verifies(newest))) reported.add(newest.firstSeq);
      // Known now, while it reads whole: damage to it later cannot mislead a push.
      else if (this.ownHead === undefined) this.ownHead = await this.newestHead();
      this.newestChecked = true;
    }
    for (const device of await this.deviceIds()) {
      const report = device === this.self ? null : await this.readDamage(device);
      const seq = report?.stopped.get(this.self);
      if (seq !== undefined) reported.add(seq);
      for (const hash of report?.checkpoints ?? []) checkpoints.add(hash);
    }
    this.reportedCheckpoints = [...checkpoints].sort();
    if (reported.size === 0) {
      this.damagedOwn = [];
      return;
    }
    // Listed afresh: a damaged file may have been removed by hand since this handle listed it.
    this.listings.delete(this.self);
    const { segments, floor } = await this.listing(this.self);
    const head = this.ownHead?.seq ?? end(segments.at(-1));
    const ranges: SeqRange[] = [];
    for (const seq of [...reported].sort((a, b) => a - b)) {
      const range = seq > head ? null : await this.unreadableRange(seq, segments, floor, head);
      if (range && !ranges.some((r) => r.first === range.first)) ranges.push(range);
    }
    this.damagedOwn = ranges;
  }

  restartAbove(anchor: ChainHead): Promise<void> {
    return this.guard(async () => {
    checkRestartAnchor(this.self, anchor, checkpointHead(await this.checkpointHeaderList(), this.self, anchor.seq));
    const dir = join(this.deviceDir(this.self), 'ops');
    for (const name of await readdir(dir)) {
      if (seqOfName(name) < 0) continue;
      await rm(join(dir, name), { force: true });
      this.headers.delete(join(dir, name));
    }
    this.listings.delete(this.self);
    this.ownHead = null;
    this.newestChecked = true;
    this.damagedOwn = [];
    });
  }

  reportDamage(damage: Damage): Promise<void> {
    return this.guard(async () => {
      if ('checkpoint' in damage) this.damagedCheckpoints.set(damage.checkpoint, await identity(this.checkpointPath(damage.checkpoint)));
      else this.stopped.set(damage.device, damage.seq);
      await this.writeDamageReport();
    });
  }

  ack(acked: SeqFrontier): Promise<void> {
    return this.guard(async () => {
      const device = await this.deviceFile(this.self);
      if (!device) throw notRegistered(this.self);
      const current = this.ownAck ?? (await this.readAck(this.self)) ?? { acked: new Map<DeviceId, number>(), lastSeenMs: device.addedMs };
      for (const [of, seq] of acked) {
        const was = current.acked.get(of) ?? -1;
        if (seq < was) throw ackRegression(this.self, of, was, seq);
      }
      const next = { acked: new Map([...current.acked, ...acked]), lastSeenMs: this.now() };
      const text = JSON.stringify({ opsync_ack: 1, acked: seqFrontierToJson(next.acked), last_seen_ms: next.lastSeenMs }) + '\n';
      // An ack lost in a crash is harmless: it only makes the stable frontier lag until the next one.
      await writeFileAtomic(join(this.deviceDir(this.self), 'ack.json'), text);
      this.ownAck = next;
      for (const [device, seq] of this.stopped) if ((next.acked.get(device) ?? -1) >= seq) this.stopped.delete(device);
      await this.writeDamageReport();
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
        floor.set(device, (await this.listing(device)).floor);
      }
      return rosterView(entries, floor, this.now(), this.horizonMs);
    }, VERIFY);
  }

  putCheckpoint(file: CheckpointFile): Promise<boolean> {
    return this.guard(() => writeCheckpointBytes(this.checkpointPath(file.header.checkpoint_hash), checkpointFileBytes(file)));
  }

  latestCheckpoint(): Promise<CheckpointHeaderJson | null> {
    return this.guard(async () => {
      return newestFirst(await this.checkpointHeaderList())[0] ?? null;
    }, VERIFY);
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
      return createReadStream(path) as AsyncIterable<Uint8Array>;
    }, VERIFY);
  }

  gc(): Promise<GcResult> {
    return this.guard(async () => {
      const view = await this.roster();
      const headers = newestFirst(await this.checkpointHeaderList());
      const through = collectableThrough(this.self, view, headers[0] ?? null);
      const segments = await this.segments(this.self);
      let droppedOps = 0;
      for (const segment of segments.slice(0, -1)) {
        if (segment.firstSeq + segment.count - 1 > through) break;
        await rm(segment.path, { force: true });
        this.headers.delete(segment.path);
        droppedOps += segment.count;
      }
      this.listings.delete(this.self);
      const stale = headers.slice(CHECKPOINTS_KEPT);
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
      if (name === DAMAGE_FILE) this.reportsChanged = true;
      if (name.startsWith(PUSH_HINT) || name === DAMAGE_FILE || CHECKPOINT_FILE.test(name)) onChange();
    });
    // A reader's damage report changed: the writer of the damaged ops pumps, and restores them;
    // a checkpoint file rewritten in place was restored: a reader it stopped tries again.
    watcher.on('change', (path: string) => {
      const name = basename(path);
      if (name === DAMAGE_FILE) this.reportsChanged = true;
      if (name === DAMAGE_FILE || CHECKPOINT_FILE.test(name)) onChange();
    });
    // The relay folder vanished: a pump finds out and says so (chokidar stops watching it).
    watcher.on('unlinkDir', (path: string) => {
      if (path === devices) onChange();
    });
    await new Promise<void>((resolve, reject) => {
      watcher.once('ready', resolve);
      watcher.once('error', reject);
    });
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
    await writeFile(join(dir, hint), '');
    const stale = (await readdir(dir)).filter((name) => name.startsWith(PUSH_HINT) && name !== hint);
    await Promise.all(stale.map((name) => rm(join(dir, name), { force: true })));
    this.lastHint = hint;
  }

  anomalies(): Readonly<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const kind of this.anomalous.values()) counts[kind] = (counts[kind] ?? 0) + 1;
    return counts;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * Runs one relay operation. Named failures pass through; a failing folder is
   * `relay_unavailable`, with its own sentence when the relay folder is gone. Reads first check
   * that relay.json still names the relay this handle read from (`verify`): a replaced folder
   * would otherwise be read through stale listings. Writes find out when they fail.
   */
  private async guard<T>(operation: () => Promise<T>, verify = false): Promise<T> {
    try {
      const stale = this.detached || (verify && !(await this.sameRelay()));
      if (stale) await (this.reattaching ??= this.reattach().finally(() => (this.reattaching = null)));
      return await operation();
    } catch (error) {
      if (isOpsyncError(error)) throw error;
      const id = await this.layoutId();
      if (id === this.relayId) throw new OpsyncError('relay_unavailable', `The relay folder ${this.location} failed: ${(error as Error).message}.`, { relay: this.location });
      this.detached = true;
      if (id === null) throw this.missing();
      // Replaced by another relay while in use: attach to it and try once more.
      return this.guard(operation);
    }
  }

  /** Whether relay.json still names the relay this handle read: one stat, and a read only when the file changed. */
  private async sameRelay(): Promise<boolean> {
    const seen = await stat(join(this.location, 'relay.json')).catch(() => null);
    if (seen === null) return false;
    if (seen.ino === this.marker?.ino && seen.mtimeMs === this.marker.mtimeMs) return true;
    if ((await this.currentId()) !== this.relayId) return false;
    this.marker = { ino: seen.ino, mtimeMs: seen.mtimeMs };
    return true;
  }

  /** The relay id in relay.json; null when the file is missing or not a relay marker of this layout. */
  private async currentId(): Promise<string | null> {
    const value = await readJson(join(this.location, 'relay.json'));
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
    this.marker = null;
    this.headers.clear();
    this.checkpointHeaders.clear();
    this.deviceFiles.clear();
    this.listings.clear();
    this.ownAck = null;
    this.lastHint = null;
    this.ownHead = undefined;
    this.stopped.clear();
    this.damagedCheckpoints.clear();
    this.reportedCheckpoints = [];
    this.reported = null;
    this.damagedOwn = [];
    this.reportsChanged = true;
    this.newestChecked = false;
    if (this.watching) {
      await this.watching.watcher.close();
      this.watching.watcher = await this.startWatcher(this.watching.onChange);
    }
    this.detached = false;
  }

  private deviceDir(device: DeviceId): string {
    return join(this.location, 'devices', device);
  }

  private checkpointPath(hash: string): string {
    return join(this.location, 'checkpoints', checkpointFileName(hash));
  }

  private note(path: string, kind: string): void {
    this.anomalous.set(relative(this.location, path), kind);
  }

  private async deviceIds(): Promise<DeviceId[]> {
    const names = await readdir(join(this.location, 'devices'));
    const ids: DeviceId[] = [];
    for (const name of names.sort()) {
      if (isDeviceId(name)) ids.push(name);
      else this.classify(join(this.location, 'devices', name));
    }
    return ids;
  }

  private classify(path: string): void {
    const name = basename(path);
    if (name.startsWith(TEMP_PREFIX)) return;
    this.note(path, name.includes('sync-conflict') || name.includes('conflicted copy') ? 'conflict_copy' : 'not_layout');
  }

  private async segments(device: DeviceId): Promise<Segment[]> {
    return (await this.listing(device)).segments;
  }

  /**
   * The device's ops folder: its valid segments in seq order and its floor; everything else in
   * it is classified. Segment files are immutable, so only names not seen before are read; the
   * list is rebuilt only when the folder gained or lost a file. This device's own folder is
   * listed once: only this handle writes it, and it records its own pushes and collections.
   */
  private async listing(device: DeviceId): Promise<Listing> {
    const cached = this.listings.get(device);
    if (cached && device === this.self) return cached;
    const dir = join(this.deviceDir(device), 'ops');
    const names = await readdir(dir).catch(() => []);
    const fresh = cached ? names.filter((name) => !cached.names.has(name)) : names;
    const replaced = cached !== undefined && (await this.replaced(cached.unreadable));
    const removed = replaced || (cached !== undefined && names.length - fresh.length !== cached.names.size);
    if (cached && !removed && fresh.length === 0) return cached;
    const segments: Segment[] = removed || !cached ? [] : [...cached.segments];
    const unreadable = new Map(removed || !cached ? [] : cached.unreadable);
    for (const name of removed ? names : fresh) {
      const path = join(dir, name);
      const match = SEGMENT_NAME.exec(name);
      if (!match) {
        this.classify(path);
        continue;
      }
      const header = await this.segmentHeader(path, device, Number(match[1]));
      if (typeof header !== 'string') {
        segments.push({ ...header, device, path });
        continue;
      }
      this.note(path, header);
      unreadable.set(path, await identity(path));
    }
    segments.sort((a, b) => a.firstSeq - b.firstSeq);
    const floor = names.map(seqOfName).reduce((lowest, seq) => (seq >= 0 ? Math.min(lowest, seq) : lowest), Infinity);
    const listing = { names: new Set(names), segments, floor: Number.isFinite(floor) ? floor : 0, unreadable };
    this.listings.set(device, listing);
    return listing;
  }

  private async segmentHeader(path: string, device: DeviceId, firstSeq: number): Promise<SegmentHeader | string> {
    let header = this.headers.get(path);
    if (header === undefined) {
      header = decodeHeader(await firstLine(path), device, firstSeq);
      this.headers.set(path, header);
    }
    return header;
  }

  private readSegment(segment: Segment): Promise<DecodedSegment> {
    return this.readSegmentFile(segment.path, segment.firstSeq, segment.device);
  }

  /** The segment file at `path`: its valid ops, and its problem (counted) if any. */
  private async readSegmentFile(path: string, firstSeq: number, device = this.self): Promise<DecodedSegment> {
    let text: string | null;
    try {
      text = await readTextAtMost(path, MAX_SEGMENT_BYTES);
    } catch {
      // Gone (collected while this read it) or unreadable: nothing to serve, nothing to count.
      return { header: null, ops: [], sizes: [], problem: 'segment_corrupt' };
    }
    const decoded: DecodedSegment = text === null ? { header: null, ops: [], sizes: [], problem: 'segment_corrupt' } : decodeSegment(text, device, firstSeq);
    if (decoded.problem) this.note(path, decoded.problem);
    return decoded;
  }

  /**
   * Writes again each damaged range of this device's folder (see `repairs`) that `ops` offer in
   * full, after checking that they continue the held ops on both sides. Returns whether any was.
   */
  private async restore(ops: readonly OpRecord[]): Promise<boolean> {
    if (this.damagedOwn.length === 0) return false;
    const publicKey = (await this.deviceFile(this.self))?.publicKey;
    if (publicKey === undefined) throw notRegistered(this.self);
    const dir = join(this.deviceDir(this.self), 'ops');
    const left: SeqRange[] = [];
    for (const range of this.damagedOwn) {
      const run = ops.filter((op) => op.seq >= range.first && op.seq <= range.last);
      if (run.length === 0) {
        left.push(range);
        continue;
      }
      const segments = await this.segments(this.self);
      const held = new Map<number, OpId>();
      for (const segment of segments.filter((s) => s.firstSeq <= range.last && end(s) >= range.first)) {
        for (const op of (await this.readSegment(segment)).ops) if (opIdHolds(op, this.crypto)) held.set(op.seq, op.op_id);
      }
      const before = await this.authenticOp(range.first - 1);
      const after = await this.authenticOp(range.last + 1);
      checkRestore({ self: this.self, publicKey, range, before: before && headOf(before), afterPrev: after?.prev ?? undefined, held }, run, this.crypto);
      const written = new Set<string>();
      for (const part of segmentRuns(run)) {
        const name = segmentName(part[0]!.seq);
        await writeFileDurable(join(dir, name), encodeSegment(this.self, part));
        written.add(name);
        this.headers.delete(join(dir, name));
      }
      // An unreadable file named inside the range would stand beside the restored segments.
      const valid = new Set(segments.map((s) => basename(s.path)));
      for (const name of await readdir(dir)) {
        const first = seqOfName(name);
        if (first >= range.first && first <= range.last && !written.has(name) && !valid.has(name)) await rm(join(dir, name), { force: true });
      }
      this.listings.delete(this.self);
    }
    const restored = left.length < this.damagedOwn.length;
    this.damagedOwn = left;
    return restored;
  }

  /**
   * The range around `seq` this device's folder cannot serve: a segment that does not read in
   * full, or the gap an unreadable or missing file leaves between readable ones; null when
   * `seq` reads fine here.
   */
  private async unreadableRange(seq: number, segments: readonly Segment[], floor: number, head: number): Promise<SeqRange | null> {
    const covering = segments.find((s) => s.firstSeq <= seq && seq <= end(s));
    if (covering) return (await this.verifies(covering)) ? null : { first: covering.firstSeq, last: end(covering) };
    const before = segments.findLast((s) => end(s) < seq);
    const after = segments.find((s) => s.firstSeq > seq);
    const first = before ? end(before) + 1 : floor;
    return first > seq ? null : { first, last: after ? after.firstSeq - 1 : head };
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

  /** Writes this reader's damage report when what stops it changed (its own folder: one writer). */
  private async writeDamageReport(): Promise<void> {
    // A checkpoint file that changed since it was reported (restored, or collected) is read afresh.
    for (const [hash, was] of this.damagedCheckpoints) if ((await identity(this.checkpointPath(hash))) !== was) this.damagedCheckpoints.delete(hash);
    const text = encodeDamageReport({ stopped: this.stopped, checkpoints: [...this.damagedCheckpoints.keys()] });
    const path = join(this.deviceDir(this.self), DAMAGE_FILE);
    // A report left by an earlier run may still name stops that are gone.
    this.reported ??= (await readTextAtMost(path, MAX_JSON_FILE_BYTES).catch(() => null)) ?? NO_DAMAGE;
    if (text === this.reported) return;
    try {
      await writeFileAtomic(path, text);
    } catch (error) {
      // Not registered yet (no folder of its own): there is nobody to report for.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    this.reported = text;
  }

  private async readDamage(device: DeviceId): Promise<DamageReport | null> {
    const path = join(this.deviceDir(device), DAMAGE_FILE);
    const value = await readJson(path);
    if (value === undefined) return null;
    const report = decodeDamageReport(value);
    if (!report) this.note(path, 'damage_file_invalid');
    return report;
  }

  /** Whether a segment file whose header could not be read was replaced or removed since; forgets the headers of those that were. */
  private async replaced(unreadable: ReadonlyMap<string, string>): Promise<boolean> {
    let any = false;
    for (const [path, was] of unreadable) {
      if ((await identity(path)) === was) continue;
      this.headers.delete(path);
      any = true;
    }
    return any;
  }

  /**
   * Whether this device's `segment` reads in full as a signed chain that continues the op held
   * before it. A segment found intact is not read again until its file changes.
   */
  private async verifies(segment: Segment): Promise<boolean> {
    const seen = await identity(segment.path);
    if (this.intact.get(segment.path) === seen) return true;
    const { ops } = await this.readSegment(segment);
    const publicKey = (await this.deviceFile(this.self))?.publicKey ?? null;
    const before = await this.authenticOp(segment.firstSeq - 1);
    const check = verifyChain({ device: this.self, anchor: anchorFor(ops, before && headOf(before)), ops, publicKey }, this.crypto);
    const whole = ops.length === segment.count && check.error === null;
    if (whole) this.intact.set(segment.path, seen);
    return whole;
  }

  /** This device's newest op as its newest segment holds it readable; null with no segment. */
  private async newestHead(): Promise<ChainHead | null> {
    const newest = (await this.segments(this.self)).at(-1);
    const op = newest ? (await this.readSegment(newest)).ops.at(-1) : undefined;
    return op ? headOf(op) : null;
  }

  /** This device's held op at `seq` when it reads and its op_id holds. */
  private async authenticOp(seq: number): Promise<OpRecord | undefined> {
    const op = await this.heldOp(seq);
    return op && opIdHolds(op, this.crypto) ? op : undefined;
  }

  /** This device's held op at `seq`, if a segment holds it readable. */
  private async heldOp(seq: number): Promise<OpRecord | undefined> {
    const segment = (await this.segments(this.self)).findLast((s) => s.firstSeq <= seq);
    return segment ? (await this.readSegment(segment)).ops.find((op) => op.seq === seq) : undefined;
  }

  private async deviceFile(device: DeviceId): Promise<DeviceFile | null> {
    const cached = this.deviceFiles.get(device);
    if (cached) return cached;
    const path = join(this.deviceDir(device), 'device.json');
    const value = await readJson(path);
    if (value === undefined) return null;
    if (!value || value.device_id !== device || typeof value.public_key !== 'string' || !Number.isSafeInteger(value.added_ms)) {
      this.note(path, 'device_file_invalid');
      return null;
    }
    const file = { publicKey: value.public_key, addedMs: value.added_ms as number };
    this.deviceFiles.set(device, file);
    return file;
  }

  private async readAck(device: DeviceId): Promise<{ acked: Map<DeviceId, number>; lastSeenMs: number } | null> {
    const path = join(this.deviceDir(device), 'ack.json');
    const value = await readJson(path);
    if (value === undefined) return null;
    const acked = value ? parseSeqFrontier(value.acked) : null;
    if (!value || !acked || !Number.isSafeInteger(value.last_seen_ms)) {
      this.note(path, 'ack_file_invalid');
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
        this.classify(path);
        continue;
      }
      const header = await this.checkpointHeader(path);
      if (header) headers.push(header);
    }
    return headers;
  }

  private async checkpointHeader(path: string): Promise<CheckpointHeaderJson | null> {
    if (this.checkpointHeaders.has(path)) return this.checkpointHeaders.get(path)!;
    let header: CheckpointHeaderJson | null;
    try {
      header = await readCheckpointHeader(path);
      if (header === null) return null;
    } catch {
      header = null;
    }
    if (header && header.checkpoint_hash !== CHECKPOINT_FILE.exec(basename(path))?.[1]) header = null;
    if (!header) this.note(path, 'checkpoint_invalid');
    this.checkpointHeaders.set(path, header);
    return header;
  }
}

/** The first seq a segment file's name gives, -1 when it is not a segment name. */
function seqOfName(name: string): number {
  return Number(SEGMENT_NAME.exec(name)?.[1] ?? -1);
}

/** The last seq a segment holds, -1 for none. */
function end(segment: SegmentHeader | undefined): number {
  return segment ? segment.firstSeq + segment.count - 1 : -1;
}

/** A file's identity as far as a replacement goes (a rename brings a new inode); '' when it is gone. */
async function identity(path: string): Promise<string> {
  const seen = await stat(path).catch(() => null);
  return seen ? `${seen.ino}:${seen.mtimeMs}:${seen.size}` : '';
}

/** relay.json, device.json and ack.json are far smaller; a larger one is damage and not read. */
const MAX_JSON_FILE_BYTES = 2 ** 20;

/** Parsed JSON object; undefined when the file does not exist; null when it is not an object. */
async function readJson(path: string): Promise<Record<string, unknown> | null | undefined> {
  let text: string | null;
  try {
    text = await readTextAtMost(path, MAX_JSON_FILE_BYTES);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return null;
  }
  if (text === null) return null;
  try {
    const value = JSON.parse(text) as unknown;
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
