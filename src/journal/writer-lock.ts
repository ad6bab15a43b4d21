import { createHash, randomBytes } from 'node:crypto';
import { readFile, realpath, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { OpsyncError } from '../util/opsync-error.js';
import { createFileDurable } from '../platform/durable-fs.js';
import { ownIdentity, parseIdentity, stillRuns, type ProcessIdentity } from './process-identity.js';

/**
 * One writer per journal. The lock is a file created exclusively that names the holder's
 * process (`ProcessIdentity`: pid, and on Linux boot id and start time) and host. A lock left by
 * a process that no longer runs (killed with SIGKILL, power loss) is stale and taken over — also
 * when its pid now belongs to another process or to the killed one's zombie; a lock held by a
 * live process — including this one — refuses. The lock file appears complete or not at all (it
 * is linked into place), so a reader never mistakes a half-written lock for a stale one.
 *
 * Two processes that find the same stale lock at the same instant could both take it over. On
 * Linux, the kernel settles that: the holder also listens on an abstract Unix socket named after
 * the lock, which only one process can hold and which the kernel frees when that process dies —
 * so of two daemons starting at once, one gets the journal and the other is refused. Abstract
 * names are open to every user of the host, so the name also hashes a secret kept beside the
 * lock (`<lock>.key`, 0600, in the owner-only data directory): another user cannot take it first
 * and keep the daemon from starting.
 */
export interface WriterLock {
  release(): Promise<void>;
}

export async function acquireWriterLock(lockPath: string, what: string): Promise<WriterLock> {
  const mutex = await hostMutex(lockPath);
  if (mutex === 'held') throw locked(what, lockPath, await readHolder(lockPath));
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      const holderText = JSON.stringify({ ...(await ownIdentity()), host: hostname() }) + '\n';
      if (await createFileDurable(lockPath, holderText, 0o600)) {
        return {
          release: async () => {
            await rm(lockPath, { force: true });
            mutex?.close();
          },
        };
      }
      const holder = await readHolder(lockPath);
      if (holder && holder.host === hostname() && (await stillRuns(holder))) throw locked(what, lockPath, holder);
      await rm(lockPath, { force: true });
    }
    throw new OpsyncError('journal_locked', `Could not take the lock ${lockPath}: another process keeps taking it.`, { lock: lockPath });
  } catch (error) {
    mutex?.close();
    throw error;
  }
}

function locked(what: string, lockPath: string, holder: ProcessIdentity | null): OpsyncError {
  const who = !holder ? 'another process' : holder.pid === process.pid ? 'this process' : `process ${holder.pid}`;
  return new OpsyncError(
    'journal_locked',
    `${what} is already open by ${who}; only one daemon may use a data directory at a time (lock: ${lockPath}).`,
    {
      lock: lockPath,
      ...(holder ? { pid: holder.pid } : {}),
    },
  );
}

/**
 * On Linux, listens on an abstract Unix socket named after the lock file's real path: 'held'
 * when a live process (this one included) already listens there. Elsewhere, or when no socket
 * can be made, null: the lock file alone decides.
 */
async function hostMutex(lockPath: string): Promise<Server | 'held' | null> {
  if (process.platform !== 'linux') return null;
  const where = join(await realpath(dirname(lockPath)), basename(lockPath));
  const name = `\0opsync-lock-${createHash('sha256')
    .update(where)
    .update('\0')
    .update(await lockSecret(lockPath))
    .digest('hex')}`;
  // Nobody is meant to connect: a process that does is shut out at once.
  const server = createServer((socket) => socket.destroy());
  return new Promise((resolve) => {
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'EADDRINUSE' ? 'held' : null));
    server.listen(name, () => {
      server.unref();
      resolve(server);
    });
  });
}

/** The secret that names the lock's abstract socket: made once (exclusively, 0600), then read. */
async function lockSecret(lockPath: string): Promise<string> {
  const path = `${lockPath}.key`;
  await createFileDurable(path, randomBytes(32).toString('hex') + '\n', 0o600);
  return (await readFile(path, 'utf8')).trim();
}

async function readHolder(lockPath: string): Promise<(ProcessIdentity & { host: string }) | null> {
  try {
    const parsed = JSON.parse(await readFile(lockPath, 'utf8')) as { host?: unknown };
    const identity = parseIdentity(parsed);
    return identity && typeof parsed.host === 'string' ? { ...identity, host: parsed.host } : null;
  } catch {
    return null;
  }
}
