import { readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { CoreCrypto } from '../../src/oplog/core-crypto.js';
import { parseSeqFrontier } from '../../src/oplog/frontier.js';
import { isDeviceId, type DeviceId } from '../../src/oplog/ids.js';
import { exists, readJsonObject } from '../../src/platform/durable-fs.js';
import { CHECKPOINT_FILE, readCheckpointHeader } from '../port/checkpoint-files.js';
import { headerFrontier, latestCovering } from '../port/relay-state.js';
import type { CheckpointHeaderJson, HeaderCheck } from '../port/relay.js';
import type { Anomalies } from './anomalies.js';
import { DAMAGE_FILE, decodeDamageReport, type DamageReport } from './damage-report.js';
import { ReaderDamage, WriterRepair } from './directory-repair.js';
import { PushHints } from './folder-watch.js';
import type { RelayFolder } from './relay-folder.js';
import { SegmentFolders } from './segment-folders.js';

export interface DeviceFile {
  readonly publicKey: string;
  readonly addedMs: number;
}

export interface AckFile {
  readonly acked: Map<DeviceId, number>;
  readonly lastSeenMs: number;
}

/**
 * What a directory relay handle read from one relay folder, and keeps because the files are
 * immutable or its own: the ops folders (`SegmentFolders`), device files, checkpoint headers, its
 * own ack, its damage report (`ReaderDamage`), the repairs readers asked of it (`WriterRepair`) and
 * its push hint. A folder replaced under the handle gets a new `FolderReads`: nothing read from
 * the old one carries over.
 */
export class FolderReads {
  readonly folders: SegmentFolders;
  /** What stops this device, reading (its damage.json). */
  readonly damage: ReaderDamage;
  /** This device's damaged ranges that readers reported: a push offering them writes them again. */
  readonly repair: WriterRepair;
  readonly hints: PushHints;
  /** This device's ack as it last wrote it. */
  ownAck: AckFile | null = null;
  /** Checkpoint headers by path (checkpoint files are immutable). */
  private readonly headers = new Map<string, CheckpointHeaderJson | null>();
  private readonly deviceFiles = new Map<DeviceId, DeviceFile>();

  constructor(
    private readonly folder: RelayFolder,
    private readonly ignored: Anomalies,
    crypto: CoreCrypto,
    /** The key this device registered with: its own ops on the relay count only when they verify under it. */
    ownKey: () => string | null,
  ) {
    const self = folder.self;
    this.folders = new SegmentFolders(folder.devicesDir, self, ignored, crypto, ownKey);
    this.damage = new ReaderDamage(
      join(folder.deviceDir(self), DAMAGE_FILE),
      (hash) => folder.checkpointPath(hash),
      () => folder.assertOwnFolders(),
    );
    this.repair = new WriterRepair(
      self,
      crypto,
      this.folders,
      () => this.publicKey(),
      (seq, authentic) => this.covered(self, seq, authentic),
    );
    this.hints = new PushHints(folder.deviceDir(self));
  }

  /** The device ids with a folder, in order; other names are counted as anomalies. */
  async deviceIds(): Promise<DeviceId[]> {
    const names = await readdir(this.folder.devicesDir);
    const ids: DeviceId[] = [];
    for (const name of names.sort()) {
      if (isDeviceId(name)) ids.push(name);
      else this.ignored.classify(join(this.folder.devicesDir, name));
    }
    return ids;
  }

  async deviceFile(device: DeviceId): Promise<DeviceFile | null> {
    const cached = this.deviceFiles.get(device);
    if (cached) return cached;
    const path = join(this.folder.deviceDir(device), 'device.json');
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

  /** This device's registered key, as its device file says. */
  async publicKey(): Promise<string | null> {
    return (await this.deviceFile(this.folder.self))?.publicKey ?? null;
  }

  async ack(device: DeviceId): Promise<AckFile | null> {
    const path = join(this.folder.deviceDir(device), 'ack.json');
    const value = await readJsonObject(path);
    if (value === undefined) return null;
    const acked = value ? parseSeqFrontier(value.acked) : null;
    if (!value || !acked || !Number.isSafeInteger(value.last_seen_ms)) {
      this.ignored.note(path, 'ack_file_invalid');
      return null;
    }
    return { acked: new Map(acked), lastSeenMs: value.last_seen_ms as number };
  }

  /** The damage reports of the other devices. */
  async damageReports(): Promise<DamageReport[]> {
    const reports: DamageReport[] = [];
    for (const device of await this.deviceIds()) {
      if (device === this.folder.self) continue;
      const path = join(this.folder.deviceDir(device), DAMAGE_FILE);
      const value = await readJsonObject(path);
      if (value === undefined) continue;
      const report = decodeDamageReport(value);
      if (report) reports.push(report);
      else this.ignored.note(path, 'damage_file_invalid');
    }
    return reports;
  }

  /** The headers of the checkpoint files in the folder; other names are counted as anomalies. */
  async checkpointHeaders(): Promise<CheckpointHeaderJson[]> {
    const dir = this.folder.checkpointsDir;
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
  async checkpointHeader(path: string, listed = false): Promise<CheckpointHeaderJson | null> {
    if (this.headers.has(path)) {
      if (listed || (await exists(path))) return this.headers.get(path)!;
      this.headers.delete(path);
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
    this.headers.set(path, header);
    return header;
  }

  /** Forgets a checkpoint file's header (the file was removed or rewritten). */
  forgetCheckpoint(path: string): void {
    this.headers.delete(path);
  }

  /** Whether a checkpoint on the relay covers `device` up to `seq`: its ops up to there may be collected. */
  async covered(device: DeviceId, seq: number, authentic?: HeaderCheck): Promise<boolean> {
    return latestCovering(await this.checkpointHeaders(), { device, seq }, authentic) !== null;
  }

  /** The furthest seq of `device` a checkpoint on the relay covers (-1: none covers it). */
  async coveredUpTo(device: DeviceId, authentic?: HeaderCheck): Promise<number> {
    const headers = (await this.checkpointHeaders()).filter((header) => authentic?.(header) ?? true);
    return Math.max(-1, ...headers.map((header) => headerFrontier(header)?.get(device)?.seq ?? -1));
  }
}
