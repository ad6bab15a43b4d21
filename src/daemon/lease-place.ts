import { createHash } from 'node:crypto';
import { lstat, realpath } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, sep } from 'node:path';
import { OpsyncError } from '../util/opsync-error.js';
import { realOrNearest } from './real-path.js';

/**
 * Where the directory lease store lives (proposals/leases.md §Where directory leases live). Never
 * in the relay folder: a relay folder may be synced between machines, and a synced folder has no
 * compare-and-set, so two devices could both be granted one epoch (and anyone who writes the
 * relay could write leases). Daemons on one host that share a relay folder find one local
 * folder by the relay folder's real path:
 *
 *     $XDG_STATE_HOME/opsync/leases/<first 32 hex of SHA-256(realpath(relay))>   (~/.local/state when unset)
 *
 * or the folder `--lease-dir` names. Either is refused when it lies in the relay folder, or in a
 * folder that a sync tool manages (`SYNC_MARKERS`).
 */
export async function leaseDirFor(relayPath: string, explicit: string | null, env: NodeJS.ProcessEnv): Promise<string> {
  const relay = await realpath(relayPath);
  const dir = explicit ?? join(stateHome(env), 'opsync', 'leases', createHash('sha256').update(relay).digest('hex').slice(0, 32));
  const real = realOrNearest(dir);
  if (real === relay || real.startsWith(relay + sep)) {
    throw new OpsyncError(
      'config_invalid',
      `The lease folder ${dir} is inside the relay folder ${relayPath}: leases never live in a folder that may be synced or that other devices write. Use --lease-dir outside it.`,
      {
        lease_dir: dir,
      },
    );
  }
  const synced = await syncedBy(real);
  if (synced) {
    throw new OpsyncError(
      'config_invalid',
      `The lease folder ${dir} is in a folder that ${synced.tool} syncs (${synced.marker}): a synced folder cannot grant an epoch to one device only. Use --lease-dir on a local disk, or --lease-backend postgres for devices on several machines.`,
      { lease_dir: dir },
    );
  }
  return dir;
}

/**
 * Files and folders by which sync tools mark the folders they manage, and path names their
 * default folders carry. Sources: Syncthing's `.stfolder` marker (docs.syncthing.net, "Folder
 * marker"); Dropbox's `.dropbox` and `.dropbox.cache` in the Dropbox root; Resilio Sync's `.sync`;
 * Nextcloud and ownCloud clients' `.sync_*.db` journals; iCloud Drive's `Mobile Documents` and
 * `com~apple~CloudDocs`; OneDrive's and Google Drive's default folder names.
 */
const SYNC_MARKERS: ReadonlyArray<{ readonly name: string; readonly tool: string }> = [
  { name: '.stfolder', tool: 'Syncthing' },
  { name: '.dropbox', tool: 'Dropbox' },
  { name: '.dropbox.cache', tool: 'Dropbox' },
  { name: '.sync', tool: 'Resilio Sync' },
  { name: '.nextcloudsync.log', tool: 'Nextcloud' },
  { name: '.owncloudsync.log', tool: 'ownCloud' },
];
const SYNC_PATH_NAMES: ReadonlyArray<{ readonly pattern: RegExp; readonly tool: string }> = [
  { pattern: /^(Mobile Documents|com~apple~CloudDocs)$/, tool: 'iCloud Drive' },
  { pattern: /^OneDrive( - .+)?$/, tool: 'OneDrive' },
  { pattern: /^(Google Drive|My Drive)$/, tool: 'Google Drive' },
  { pattern: /^Dropbox( \(.+\))?$/, tool: 'Dropbox' },
];

/** The sync tool that manages `dir` or a folder above it, and what gave it away; null when none does. */
export async function syncedBy(dir: string): Promise<{ tool: string; marker: string } | null> {
  for (let at = dir; ; at = dirname(at)) {
    for (const { name, tool } of SYNC_MARKERS) {
      if (await lstat(join(at, name)).catch(() => null)) return { tool, marker: join(at, name) };
    }
    const named = SYNC_PATH_NAMES.find(({ pattern }) => pattern.test(basename(at)));
    if (named) return { tool: named.tool, marker: at };
    if (dirname(at) === at) return null;
  }
}

function stateHome(env: NodeJS.ProcessEnv): string {
  return env.XDG_STATE_HOME && isAbsolute(env.XDG_STATE_HOME) ? env.XDG_STATE_HOME : join(homedir(), '.local', 'state');
}
