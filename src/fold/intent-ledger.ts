import { canonicalize } from '../oplog/canonical.js';
import type { Hlc } from '../oplog/hlc.js';
import type { AgentId, DeviceId, Epoch, OpId, RunId } from '../oplog/ids.js';
import { compareOps } from '../oplog/op-record.js';
import type { FoldOp } from './fold-op.js';
import type { MultisetHash } from './multiset-hash.js';
import type { IntentStatus } from './payload-rules.js';

/**
 * The leased ledger (proposals/fold.md §Intents). Runs are keyed by agent and run id (two agents
 * may use the same run id; one committing it says nothing of the other's). Per run the winning intent is the
 * greatest under: committed > failed > pending, then the higher epoch, then the earliest
 * (hlc, op_id). Per agent the ledger keeps the highest epoch seen; a pending run below it is
 * fenced. Both are joins over the op-set, so the ledger is order-independent and a checkpoint
 * of it plus later ops equals the ledger of all ops. Committed and failed are terminal (nothing
 * outranks committed; only committed outranks failed), and committed runs are never dropped:
 * the ledger is the idempotency oracle `sync.fence_check` consults.
 */
export type RunStatus = IntentStatus | 'fenced';

export interface RunRecord {
  readonly run_id: RunId;
  readonly agent_id: AgentId;
  readonly epoch: Epoch;
  readonly status: RunStatus;
  readonly op_id: OpId;
  readonly hlc: Hlc;
  readonly device_id: DeviceId;
}

/** One intent as the ledger keeps it (the winning op's facts); this is also its checkpoint form. */
export interface IntentCandidate {
  readonly run_id: RunId;
  readonly agent_id: AgentId;
  readonly epoch: Epoch;
  readonly status: IntentStatus;
  readonly op_id: OpId;
  readonly hlc: Hlc;
  readonly device_id: DeviceId;
}

const RANK: Readonly<Record<IntentStatus, number>> = { pending: 0, failed: 1, committed: 2 };

export class IntentLedger {
  /** By `runKey(agent, run)`. */
  private readonly runs = new Map<string, IntentCandidate>();
  /** Per agent its highest epoch, and the keys of its runs whose winner is pending. */
  private readonly agents = new Map<string, { epoch: Epoch; pending: Set<string> }>();

  constructor(
    private readonly hash: MultisetHash,
    private readonly sha256Hex: (text: string) => string,
  ) {}

  get runCount(): number {
    return this.runs.size;
  }

  get agentCount(): number {
    return this.agents.size;
  }

  apply(op: FoldOp): 'inserted' | 'replaced' | 'unchanged' {
    const p = op.payload;
    return this.offer({
      run_id: p.id as RunId,
      agent_id: p.agent_id as AgentId,
      epoch: p.epoch as Epoch,
      status: p.status as IntentStatus,
      op_id: op.op_id,
      hlc: op.hlc,
      device_id: op.device_id,
    });
  }

  /**
   * Folds one candidate in; used by `apply` and by checkpoint restore. 'unchanged' means the
   * state did not change at all: neither the run's winner nor its agent's epoch.
   */
  offer(candidate: IntentCandidate): 'inserted' | 'replaced' | 'unchanged' {
    const epochRaised = this.raiseEpoch(candidate.agent_id, candidate.epoch);
    const key = runKey(candidate.agent_id, candidate.run_id);
    const current = this.runs.get(key);
    if (current && !outranks(candidate, current)) return epochRaised ? 'replaced' : 'unchanged';
    if (current) {
      this.hash.remove(this.runDigest(current));
      this.agents.get(current.agent_id)?.pending.delete(key);
    }
    this.runs.set(key, candidate);
    this.hash.add(this.runDigest(candidate));
    if (this.statusOf(candidate) === 'pending') this.agents.get(candidate.agent_id)!.pending.add(key);
    return current ? 'replaced' : 'inserted';
  }

  run(agentId: string, runId: string): RunRecord | undefined {
    const candidate = this.runs.get(runKey(agentId, runId));
    return candidate && { ...candidate, status: this.statusOf(candidate) };
  }

  agentEpoch(agentId: string): Epoch | undefined {
    return this.agents.get(agentId)?.epoch;
  }

  allRuns(): IterableIterator<IntentCandidate> {
    return this.runs.values();
  }

  allAgents(): Array<[string, Epoch]> {
    return [...this.agents].map(([agent, state]) => [agent, state.epoch]);
  }

  /** Raises an agent's epoch to at least `epoch` (fold, and checkpoint restore of agents); true when it changed. */
  raiseEpoch(agentId: AgentId, epoch: Epoch): boolean {
    const agent = this.agents.get(agentId);
    if (agent && agent.epoch >= epoch) return false;
    if (agent) this.hash.remove(this.agentDigest(agentId, agent.epoch));
    const state = agent ?? { epoch, pending: new Set<string>() };
    state.epoch = epoch;
    this.agents.set(agentId, state);
    this.hash.add(this.agentDigest(agentId, epoch));
    for (const key of state.pending) {
      const run = this.runs.get(key)!;
      if (run.epoch >= epoch) continue;
      this.hash.remove(this.digest(run, 'pending'));
      this.hash.add(this.digest(run, 'fenced'));
      state.pending.delete(key);
    }
    return true;
  }

  private statusOf(candidate: IntentCandidate): RunStatus {
    if (candidate.status !== 'pending') return candidate.status;
    return candidate.epoch < (this.agents.get(candidate.agent_id)?.epoch ?? 0) ? 'fenced' : 'pending';
  }

  private runDigest(candidate: IntentCandidate): string {
    return this.digest(candidate, this.statusOf(candidate));
  }

  private digest(candidate: IntentCandidate, status: RunStatus): string {
    return this.sha256Hex(canonicalize(['run', candidate.run_id, status, candidate.op_id]));
  }

  private agentDigest(agentId: string, epoch: Epoch): string {
    return this.sha256Hex(canonicalize(['agent', agentId, epoch]));
  }
}

/**
 * A run's key in the ledger: `agent/run`. Ids cannot hold "/", so keys never collide; the key is
 * also the record key `sync.records` pages intents by. The state hash of a run is unchanged (its
 * digest names its op, which names its agent), so ledgers without shared run ids hash as before.
 */
export function runKey(agentId: string, runId: string): string {
  return `${agentId}/${runId}`;
}

function outranks(a: IntentCandidate, b: IntentCandidate): boolean {
  if (RANK[a.status] !== RANK[b.status]) return RANK[a.status] > RANK[b.status];
  if (a.epoch !== b.epoch) return a.epoch > b.epoch;
  return compareOps(a, b) < 0;
}
