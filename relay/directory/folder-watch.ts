import { readdir, rename, rm } from 'node:fs/promises';
import { basename, join, sep } from 'node:path';
import { watch as chokidarWatch, type FSWatcher } from 'chokidar';
import { createEmptyFile, TEMP_PREFIX } from '../../src/platform/durable-fs.js';
import { CHECKPOINT_FILE } from '../port/checkpoint-files.js';
import { DAMAGE_FILE } from './damage-report.js';
import type { RelayFolder } from './relay-folder.js';

/** Name prefix of push hints in a device folder. */
const PUSH_HINT = 'push-';

/** What a watcher of the relay folder tells. */
export interface FolderEvents {
  /** Another device pushed, reported damage, or put or restored a checkpoint; or the folder vanished. */
  readonly changed: () => void;
  /** A reader's damage report was written or changed. */
  readonly damageReported: () => void;
}

/**
 * Watches the relay folder for other devices' writes (proposals/relay.md §Live sync). Depth 1
 * reaches each device's top-level files but not its ops folder: chokidar rescans a folder on every
 * event and watches each file in it, which grows costly with thousands of segments. A push leaves
 * a hint in the device's small folder (`PushHints`), which is what is watched; so are damage
 * reports and the checkpoints folder. This device's own folder is not watched.
 */
export async function watchFolder(folder: RelayFolder, events: FolderEvents): Promise<FSWatcher> {
  const devices = folder.devicesDir;
  const own = folder.deviceDir(folder.self) + sep;
  const watcher = chokidarWatch([devices, folder.checkpointsDir], {
    ignoreInitial: true,
    depth: 1,
    ignored: (path: string) => basename(path).startsWith(TEMP_PREFIX) || (path + sep).startsWith(own),
  });
  watcher.on('add', (path: string) => {
    const name = basename(path);
    if (name === DAMAGE_FILE) events.damageReported();
    if (name.startsWith(PUSH_HINT) || name === DAMAGE_FILE || CHECKPOINT_FILE.test(name)) events.changed();
  });
  // A reader's damage report changed: the writer of the damaged ops pumps, and restores them;
  // a checkpoint file rewritten in place was restored: a reader it stopped tries again.
  watcher.on('change', (path: string) => {
    const name = basename(path);
    if (name === DAMAGE_FILE) events.damageReported();
    if (name === DAMAGE_FILE || CHECKPOINT_FILE.test(name)) events.changed();
  });
  // The relay folder vanished: a pump finds out and says so (chokidar stops watching it).
  watcher.on('unlinkDir', (path: string) => {
    if (path === devices) events.changed();
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
 * fresh name, `push-<seq>`, in the device folder, replacing the previous one. A fresh name because
 * watchers coalesce rapid changes of one file and drop the last; a small folder because they
 * rescan a folder on every event. Nobody reads hints for data.
 */
export class PushHints {
  /** The push hint this device left last (null until its first push through this handle). */
  private last: string | null = null;

  constructor(private readonly dir: string) {}

  async hint(seq: number): Promise<void> {
    // A restore hints at an unchanged head: the name alternates so that watchers see a new one.
    const hint = this.last === `${PUSH_HINT}${seq}` ? `${PUSH_HINT}${seq}.again` : `${PUSH_HINT}${seq}`;
    if (this.last !== null) {
      // One rename moves the hint to its fresh name: watchers see the new name appear.
      try {
        await rename(join(this.dir, this.last), join(this.dir, hint));
        this.last = hint;
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    await createEmptyFile(join(this.dir, hint));
    const stale = (await readdir(this.dir)).filter((name) => name.startsWith(PUSH_HINT) && name !== hint);
    await Promise.all(stale.map((name) => rm(join(this.dir, name), { force: true })));
    this.last = hint;
  }
}
