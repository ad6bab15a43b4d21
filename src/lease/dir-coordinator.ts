import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isDeviceId, isEpoch, type AgentId } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { createFileDurable } from '../platform/durable-fs.js';
import type { LeaseCoordinator } from './coordinator.js';
import type { LeaseRecord } from './lease-rules.js';
import { ruleCoordinator } from './rule-coordinator.js';

/**
 * Leases in a directory (proposals/leases.md §Directory): each agent has a folder of versioned
 * state files, `leases/<sha256(agent)>/<version>.json`, each naming its own random id and the id
 * of the state it was computed from. An operation reads the newest version V, applies the rule,
 * and creates V+1 with link semantics (temp file, fsync, link, fsync folder): the link fails if
 * another writer created V+1 first, and the operation retries on the new state. That
 * compare-and-set is the linearization point, so there is no lock to go stale when a daemon dies
 * mid-operation.
 *
 * Old versions are pruned (the newest KEPT_VERSIONS stay), so a writer paused for that many
 * operations could link into a pruned slot. After linking it therefore checks that its file is
 * in the history: it is the newest, or version V+2 was computed from it. A stale file is removed
 * and the operation retried; when V+2 is pruned too, the outcome is reported as unknown rather
 * than guessed. The clock is this host's wall clock; the guarantee holds for daemons on one host
 * with a local file system — not for a synced folder, which does not make creation atomic
 * across machines.
 */
export const KEPT_VERSIONS = 64;

interface StateFile {
  readonly id: string;
  readonly prev: string | null;
  readonly record: LeaseRecord;
}

export interface DirCoordinatorOptions {
  readonly now?: () => number;
  /** Runs between reading the state and linking the next version: where tests pause a writer. */
  readonly beforeLink?: () => Promise<void>;
}

export function dirCoordinator(root: string, options: DirCoordinatorOptions = {}): LeaseCoordinator {
  const now = options.now ?? Date.now;
  return ruleCoordinator(
    'dir',
    async (agent, step) => {
      const dir = await agentFolder(root, agent);
      for (let attempt = 0; attempt < 1000; attempt++) {
        const { version, state } = await newest(root, agent);
        const { write, result } = step(state?.record ?? null, now());
        const id = randomBytes(12).toString('base64url');
        const path = fileOf(dir, version + 1);
        await options.beforeLink?.();
        if (!(await createFileDurable(path, JSON.stringify({ opsync_lease: 1, id, prev: state?.id ?? null, ...write }) + '\n'))) continue;
        if (await inHistory(root, agent, version + 1, id)) {
          if (version + 1 > KEPT_VERSIONS) await rm(fileOf(dir, version + 1 - KEPT_VERSIONS), { force: true });
          return result;
        }
        // Linked into a slot freed by pruning, after the history had moved on: not an operation.
        await rm(path, { force: true });
      }
      throw new OpsyncError('lease_backend_unavailable', `The lease directory ${root} is too contended for agent ${agent}; try again.`, {
        agent_id: agent,
      });
    },
    async (agent) => ({ record: (await newest(root, agent)).state?.record ?? null, now_ms: now() }),
    () => Promise.resolve(),
  );
}

/** An agent's folder in the lease folder: a hash of its id, so any id makes a safe name. */
function folderOf(root: string, agent: AgentId): string {
  return join(root, createHash('sha256').update(agent).digest('hex').slice(0, 32));
}

function fileOf(dir: string, version: number): string {
  return join(dir, `${String(version).padStart(12, '0')}.json`);
}

async function newestVersion(dir: string): Promise<number> {
  const versions = (await readdir(dir).catch(() => [] as string[]))
    .map((name) => /^(\d{12})\.json$/.exec(name)?.[1])
    .filter((v): v is string => v !== undefined);
  return versions.length === 0 ? 0 : Math.max(...versions.map(Number));
}

/**
 * The agent's folder, created if needed — but never the lease folder itself, which the daemon
 * creates at start: one that vanished (with the relay folder, or a share not mounted) is not
 * re-created while running, or every agent's epochs would start over.
 */
async function agentFolder(root: string, agent: AgentId): Promise<string> {
  const dir = folderOf(root, agent);
  try {
    await mkdir(dir, { mode: 0o755 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new OpsyncError(
        'lease_backend_unavailable',
        `The lease folder ${root} is gone (deleted with the relay folder, or a share that is not mounted): no lease is granted, renewed or released until it is back, since epochs would start over.`,
        { location: root },
      );
    }
    if (code !== 'EEXIST') throw error;
  }
  return dir;
}

/** The state file at `version`; null when it is not there (pruned meanwhile). */
async function stateAt(dir: string, version: number, agent: AgentId): Promise<StateFile | null> {
  let text: string;
  try {
    text = await readFile(fileOf(dir, version), 'utf8');
  } catch (error) {
    // Anything but absence would be retried for ever: it is damage, and said so.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw damaged(agent);
  }
  return parseState(text, agent);
}

async function newest(root: string, agent: AgentId): Promise<{ version: number; state: StateFile | null }> {
  const dir = folderOf(root, agent);
  const version = await newestVersion(dir);
  if (version === 0) return { version, state: null };
  const state = await stateAt(dir, version, agent);
  return state === null ? newest(root, agent) : { version, state };
}

/** Whether the file just linked at `version` with `id` is part of the history (see above). */
async function inHistory(root: string, agent: AgentId, version: number, id: string): Promise<boolean> {
  const dir = folderOf(root, agent);
  if ((await newestVersion(dir)) === version) return true;
  const next = await stateAt(dir, version + 1, agent);
  if (next) return next.prev === id;
  throw new OpsyncError(
    'lease_backend_unavailable',
    `A lease operation on agent ${agent} was paused while ${KEPT_VERSIONS} others ran; whether it took effect is unknown. Read lease.status and try again.`,
    { agent_id: agent },
  );
}

function parseState(text: string, agent: AgentId): StateFile {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw damaged(agent);
  }
  const { holder, epoch, granted_at_ms, expires_at_ms } = value;
  if (value.opsync_lease !== 1 || value.agent_id !== agent || (holder !== null && !isDeviceId(holder))) throw damaged(agent);
  if (!isEpoch(epoch) || ![granted_at_ms, expires_at_ms].every((n) => Number.isSafeInteger(n))) throw damaged(agent);
  if (typeof value.id !== 'string' || (value.prev !== null && typeof value.prev !== 'string')) throw damaged(agent);
  return {
    id: value.id,
    prev: value.prev,
    record: {
      agent_id: agent,
      holder,
      epoch,
      granted_at_ms: granted_at_ms as number,
      expires_at_ms: expires_at_ms as number,
    },
  };
}

function damaged(agent: AgentId): OpsyncError {
  return new OpsyncError('lease_backend_unavailable', `The lease state of agent ${agent} in the lease directory is damaged.`, {
    agent_id: agent,
  });
}
