import { createHash } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isDeviceId, type AgentId } from '../oplog/ids.js';
import { OpsyncError } from '../oplog/opsync-error.js';
import { createFileDurable, ensureDir } from '../../relay/durable-fs.js';
import type { LeaseCoordinator } from './coordinator.js';
import type { LeaseRecord } from './lease-rules.js';
import { ruleCoordinator } from './rule-coordinator.js';

/**
 * Leases in a directory (proposals/leases.md §Directory): each agent has a folder of versioned
 * state files, `leases/<sha256(agent)>/<version>.json`. An operation reads the newest version V,
 * applies the rule, and creates V+1 with link semantics (temp file, fsync, link, fsync folder):
 * the link fails if another writer created V+1 first, and the operation retries on the new state.
 * That compare-and-set is the linearization point, so there is no lock to go stale when a
 * daemon dies mid-operation. The clock is this host's wall clock; the guarantee holds for daemons
 * on one host with a local file system — not for a synced folder, which does not make creation
 * atomic across machines.
 */
export function dirCoordinator(root: string, now: () => number = Date.now): LeaseCoordinator {
  const folder = (agent: AgentId) => join(root, createHash('sha256').update(agent).digest('hex').slice(0, 32));

  async function newest(agent: AgentId): Promise<{ version: number; record: LeaseRecord | null }> {
    const dir = folder(agent);
    const versions = (await readdir(dir).catch(() => [] as string[])).map((name) => /^(\d{12})\.json$/.exec(name)?.[1]).filter((v): v is string => v !== undefined);
    if (versions.length === 0) return { version: 0, record: null };
    const version = Math.max(...versions.map(Number));
    const text = await readFile(join(dir, `${String(version).padStart(12, '0')}.json`), 'utf8').catch(() => null);
    if (text === null) return newest(agent);
    return { version, record: parseRecord(text, agent) };
  }

  return ruleCoordinator(
    'dir',
    async (agent, step) => {
      const dir = folder(agent);
      await ensureDir(dir);
      for (let attempt = 0; attempt < 1000; attempt++) {
        const { version, record } = await newest(agent);
        const { write, result } = step(record, now());
        const name = `${String(version + 1).padStart(12, '0')}.json`;
        if (await createFileDurable(join(dir, name), JSON.stringify({ opsync_lease: 1, ...write }) + '\n')) {
          if (version > 1) await rm(join(dir, `${String(version - 1).padStart(12, '0')}.json`), { force: true });
          return result;
        }
      }
      throw new OpsyncError('lease_backend_unavailable', `The lease directory ${root} is too contended for agent ${agent}; try again.`, { agent_id: agent });
    },
    async (agent) => ({ record: (await newest(agent)).record, now_ms: now() }),
    () => Promise.resolve(),
  );
}

function parseRecord(text: string, agent: AgentId): LeaseRecord {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw damaged(agent);
  }
  const { holder, epoch, granted_at_ms, expires_at_ms } = value;
  if (value.opsync_lease !== 1 || value.agent_id !== agent || (holder !== null && !isDeviceId(holder))) throw damaged(agent);
  if (![epoch, granted_at_ms, expires_at_ms].every((n) => Number.isSafeInteger(n))) throw damaged(agent);
  return { agent_id: agent, holder, epoch: epoch as number, granted_at_ms: granted_at_ms as number, expires_at_ms: expires_at_ms as number };
}

function damaged(agent: AgentId): OpsyncError {
  return new OpsyncError('lease_backend_unavailable', `The lease state of agent ${agent} in the lease directory is damaged.`, { agent_id: agent });
}
