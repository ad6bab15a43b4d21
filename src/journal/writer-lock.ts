import { readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { OpsyncError } from '../oplog/opsync-error.js';
import { createFileDurable } from '../../relay/durable-fs.js';
import { ownIdentity, parseIdentity, stillRuns, type ProcessIdentity } from './process-identity.js';

/**
 * One writer per journal. The lock is a file created exclusively that names the holder's
 * process (`ProcessIdentity`: pid, and on Linux boot id and start time) and host. A lock left by
 * a process that no longer runs (killed with SIGKILL, power loss) is stale and taken over — also
 * when its pid now belongs to another process or to the killed one's zombie; a lock held by a
 * live process — including this one — refuses.
 * The lock file appears complete or not at all (it is linked into place), so a reader never
 * mistakes a half-written lock for a stale one. Two daemons starting at the same instant on
 * a data directory whose previous holder crashed can both see the stale lock; that race is
 * documented in proposals/journal.md.
 */
export interface WriterLock {
  release(): Promise<void>;
}

export async function acquireWriterLock(lockPath: string, what: string): Promise<WriterLock> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const holderText = JSON.stringify({ ...(await ownIdentity()), host: hostname() }) + '\n';
    if (await createFileDurable(lockPath, holderText, 0o600)) {
      return { release: () => rm(lockPath, { force: true }) };
    }
    const holder = await readHolder(lockPath);
    if (holder && holder.host === hostname() && (await stillRuns(holder))) {
      const who = holder.pid === process.pid ? 'this process' : `process ${holder.pid}`;
      throw new OpsyncError(
        'journal_locked',
        `${what} is already open by ${who}; only one daemon may use a data directory at a time (lock: ${lockPath}).`,
        { lock: lockPath, pid: holder.pid },
      );
    }
    await rm(lockPath, { force: true });
  }
  throw new OpsyncError('journal_locked', `Could not take the lock ${lockPath}: another process keeps taking it.`, { lock: lockPath });
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
