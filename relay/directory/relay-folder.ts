import { lstat, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { v4 as uuidv4 } from 'uuid';
import type { DeviceId } from '../../src/oplog/ids.js';
import { isOpsyncError, OpsyncError } from '../../src/util/opsync-error.js';
import {
  assertRealDirs,
  createFileDurable,
  ensureDir,
  readJsonObject,
  TEMP_PREFIX,
  whyNotWritable,
} from '../../src/platform/durable-fs.js';
import { checkpointFileName } from '../port/checkpoint-files.js';

export const RELAY_LAYOUT_VERSION = 1;

/** A temporary file in the shared checkpoints folder untouched for this long is a write a crash interrupted. */
const ABANDONED_WRITE_MS = 60 * 60 * 1000;

/** Files `bytes` counts at most: a relay of a million ops holds some thousands. */
const MAX_COUNTED = 100_000;

/** relay.json's file identity, to tell when it was written again. */
interface Marker {
  readonly ino: number;
  readonly mtimeMs: number;
}

/** What `RelayFolder.failure` makes of an error: a named failure to throw, or a folder replaced under the handle. */
export type FolderFailure = { readonly kind: 'failed'; readonly error: OpsyncError } | { readonly kind: 'replaced' };

/**
 * The relay folder as a place (proposals/relay.md §A relay folder that vanishes): its layout, its
 * identity (relay.json's id and file identity), and whether it is still the folder a handle read —
 * or gone (deleted, a share not mounted), or replaced by another relay or a restored backup. It
 * names the paths of the layout and checks the folders a device writes into are real folders.
 */
export class RelayFolder {
  /** Set when the folder was found missing or replaced; cleared once the handle re-attached. */
  detached = false;

  private constructor(
    readonly location: string,
    readonly self: DeviceId,
    /** The `relay_id` of relay.json ("" for relays made before ids). */
    private relayId: string,
    private marker: Marker | null,
  ) {}

  /** Opens the relay folder at `root`, creating its layout if needed. */
  static async open(root: string, self: DeviceId): Promise<RelayFolder> {
    const markerPath = join(root, 'relay.json');
    try {
      await ensureDir(join(root, 'devices'));
      await ensureDir(join(root, 'checkpoints'));
      await createFileDurable(markerPath, JSON.stringify({ opsync_relay: RELAY_LAYOUT_VERSION, relay_id: uuidv4() }) + '\n');
    } catch (error) {
      throw new OpsyncError('config_invalid', `The relay folder ${root} cannot be created or written: ${whyNotWritable(error)}.`, {
        location: root,
      });
    }
    const id = await currentId(root);
    if (id === null) {
      const version = (await readJsonObject(markerPath))?.opsync_relay;
      throw new OpsyncError(
        'relay_invalid',
        `${root} is not an opsync relay of layout version ${RELAY_LAYOUT_VERSION} (relay.json says ${JSON.stringify(version)}).`,
        { location: root },
      );
    }
    return new RelayFolder(root, self, id, await markerOf(root));
  }

  get devicesDir(): string {
    return join(this.location, 'devices');
  }

  get checkpointsDir(): string {
    return join(this.location, 'checkpoints');
  }

  deviceDir(device: DeviceId): string {
    return join(this.location, 'devices', device);
  }

  checkpointPath(hash: string): string {
    return join(this.location, 'checkpoints', checkpointFileName(hash));
  }

  /**
   * Whether the folder is still the one the handle read: one stat of relay.json. A relay.json
   * written again — even naming the same relay, as in a folder restored from a backup — means the
   * folder was put back in place: what the handle read and watched no longer holds.
   */
  async same(): Promise<boolean> {
    const seen = await markerOf(this.location);
    if (seen === null) return false;
    if (seen.ino === this.marker?.ino && seen.mtimeMs === this.marker.mtimeMs) return true;
    if (this.marker !== null) return false;
    if ((await currentId(this.location)) !== this.relayId) return false;
    this.marker = seen;
    return true;
  }

  /** Takes the folder as it is now for the one the handle reads (it is back, possibly as another relay). */
  async attach(): Promise<void> {
    const id = await this.layoutId();
    if (id === null) throw this.missing();
    this.relayId = id;
    this.marker = await markerOf(this.location);
  }

  /**
   * What an error of a relay operation means: named failures pass through; a failing folder is
   * `relay_unavailable`, with its own sentence when the folder is gone; a folder replaced by
   * another relay while in use is `replaced` (the handle attaches to it and tries once more).
   */
  async failure(error: unknown): Promise<FolderFailure> {
    if (isOpsyncError(error)) return { kind: 'failed', error };
    const code = (error as NodeJS.ErrnoException).code;
    // Out of file descriptors (a flood of connections): reading relay.json would fail too and look like a missing folder.
    if (code === 'EMFILE' || code === 'ENFILE') {
      const message = `The relay folder ${this.location} cannot be read now: too many files are open (${code}); sync resumes once some are closed.`;
      return { kind: 'failed', error: new OpsyncError('relay_unavailable', message, { relay: this.location }) };
    }
    const id = await this.layoutId();
    if (id === this.relayId) {
      const message = `The relay folder ${this.location} failed: ${(error as Error).message}.`;
      return { kind: 'failed', error: new OpsyncError('relay_unavailable', message, { relay: this.location }) };
    }
    this.detached = true;
    return id === null ? { kind: 'failed', error: this.missing() } : { kind: 'replaced' };
  }

  /**
   * The folders this device writes into, and removes from, are real folders of the relay: a
   * symbolic link planted at `devices/<self>`, its `ops/` or `checkpoints/` would carry its
   * segments, acks and reports — and the removals of collection — outside the relay
   * (proposals/threat-model.md §Files). One lstat each, before every write.
   */
  assertOwnFolders(): Promise<void> {
    const dir = this.deviceDir(this.self);
    return assertRealDirs(
      [this.devicesDir, dir, join(dir, 'ops'), this.checkpointsDir],
      (path) =>
        new OpsyncError(
          'relay_invalid',
          `${path} in the relay is not a folder (a symbolic link or a file stands there): this device writes nothing through it. Remove it; the device writes its files again.`,
          { location: path },
        ),
    );
  }

  /**
   * Removes the temporary files of writes a crash interrupted (a segment may leave one of 32
   * MiB, a checkpoint one of hundreds): at registration, before the handle writes anything,
   * every one in this device's folders, and in the shared checkpoints folder those older than
   * any write takes (another device may be writing one now).
   */
  async removeLeftovers(): Promise<void> {
    // File times are the system clock's, whatever clock the relay was given.
    const nowMs = Date.now();
    const own = [this.deviceDir(this.self), join(this.deviceDir(this.self), 'ops')];
    const shared = this.checkpointsDir;
    for (const dir of [...own, shared]) {
      for (const name of await readdir(dir)) {
        if (!name.startsWith(TEMP_PREFIX)) continue;
        const path = join(dir, name);
        const stale = dir !== shared || ((await stat(path).catch(() => null))?.mtimeMs ?? Infinity) < nowMs - ABANDONED_WRITE_MS;
        if (stale) await rm(path, { force: true });
      }
    }
  }

  /**
   * The bytes of the relay's regular files, symbolic links not followed, at most MAX_COUNTED
   * files (a folder that holds more is counted that far): for the daemon's metrics.
   */
  async bytes(): Promise<number> {
    let total = 0;
    let files = 0;
    const visit = async (dir: string, depth: number): Promise<void> => {
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const entry of entries) {
        if (files >= MAX_COUNTED) return;
        const path = join(dir, entry.name);
        if (entry.isDirectory() && depth > 0) await visit(path, depth - 1);
        else if (entry.isFile()) {
          files++;
          total += (await lstat(path).catch(() => null))?.size ?? 0;
        }
      }
    };
    // relay.json, devices/<device>/ops/<segment>, checkpoints/<file>: three levels below the root.
    await visit(this.location, 3);
    return total;
  }

  /** The relay id when the whole layout is there; null when the folder is gone (deleted, or a share not mounted). */
  private async layoutId(): Promise<string | null> {
    const folders = await Promise.allSettled([this.devicesDir, this.checkpointsDir].map((folder) => stat(folder)));
    return folders.every((result) => result.status === 'fulfilled') ? currentId(this.location) : null;
  }

  private missing(): OpsyncError {
    return new OpsyncError(
      'relay_unavailable',
      `The relay folder ${this.location} is gone (deleted, or a share that is not mounted). This device keeps its ops in its journal and pushes them once the folder is back; it does not re-create the folder while running.`,
      { relay: this.location },
    );
  }
}

/** The relay id in relay.json; null when the file is missing or not a relay marker of this layout. */
async function currentId(root: string): Promise<string | null> {
  const value = await readJsonObject(join(root, 'relay.json'));
  if (value?.opsync_relay !== RELAY_LAYOUT_VERSION) return null;
  return typeof value.relay_id === 'string' ? value.relay_id : '';
}

/** relay.json's file identity, to tell when it was written again; null when it cannot be read. */
async function markerOf(root: string): Promise<Marker | null> {
  const seen = await stat(join(root, 'relay.json')).catch(() => null);
  return seen && { ino: seen.ino, mtimeMs: seen.mtimeMs };
}
