import type { LeaseCoordinator } from '../lease/coordinator.js';
import { fenceDecision } from '../lease/fence.js';
import { isLive, MAX_TTL_MS, MIN_TTL_MS, toLease } from '../lease/lease-rules.js';
import { INTENT_STATUSES } from '../fold/payload-rules.js';
import { parseAgentId, parseRunId, type Epoch } from '../oplog/ids.js';
import type { Session } from '../session/session.js';
import { defineMethod, resultObject } from './method.js';
import { integer, nameId, object, oneOf, parsed, required } from './schema.js';

/**
 * Leases, the intent ledger and the dispatch fence (proposals/leases.md §Protocol). A host calls
 * `lease.acquire`, then `sync.fence_check` right before the side effect, and
 * `sync.record_intent(committed)` after it.
 */
const agentId = nameId(parseAgentId);
const runId = nameId(parseRunId);
const positive = integer({ min: 1 });
/** An epoch acquire returned: a positive integer. */
const epoch = parsed<Epoch>(positive.json, (value, path) => positive.parse(value, path) as Epoch);
const ttl = integer({ min: MIN_TTL_MS, max: MAX_TTL_MS });
const lease = resultObject({
  agent_id: { type: 'string' },
  holder: { type: 'string' },
  epoch: { type: 'integer' },
  granted_at_ms: { type: 'integer' },
  expires_at_ms: { type: 'integer' },
});

export function leaseMethods(session: Session, leases: LeaseCoordinator) {
  const device = session.device;
  return [
    defineMethod({
      name: 'lease.acquire',
      summary:
        'Takes the execution lease of an agent for this device, minting the next epoch; refused while anyone (this device included) holds it.',
      params: object({
        agent_id: required(agentId, 'the agent'),
        ttl_ms: required(ttl, `lease duration, ${MIN_TTL_MS} ms to ${MAX_TTL_MS} ms`),
      }),
      result: lease,
      errors: ['lease_held', 'lease_epochs_exhausted', 'lease_backend_unavailable'],
      handler: (p) => leases.acquire(p.agent_id, device, p.ttl_ms, session.state.agentEpoch(p.agent_id)),
    }),
    defineMethod({
      name: 'lease.renew',
      summary: "Extends this device's lease at its epoch; lost if it expired, was released, or another epoch is current.",
      params: object({
        agent_id: required(agentId, 'the agent'),
        epoch: required(epoch, 'the epoch acquire returned'),
        ttl_ms: required(ttl, 'new duration from now'),
      }),
      result: lease,
      errors: ['lease_lost', 'lease_backend_unavailable'],
      handler: (p) => leases.renew(p.agent_id, device, p.epoch, p.ttl_ms),
    }),
    defineMethod({
      name: 'lease.release',
      summary: "Gives up this device's lease at its epoch (the epoch stays used).",
      params: object({ agent_id: required(agentId, 'the agent'), epoch: required(epoch, 'the epoch acquire returned') }),
      result: resultObject({ released: { type: 'boolean' }, released_at_ms: { type: 'integer' } }),
      errors: ['lease_lost', 'lease_backend_unavailable'],
      handler: async (p) => ({ released: true, ...(await leases.release(p.agent_id, device, p.epoch)) }),
    }),
    defineMethod({
      name: 'lease.status',
      summary: "The agent's live lease, or null when it is unheld, released or expired (by the coordinator's clock).",
      params: object({ agent_id: required(agentId, 'the agent') }),
      result: resultObject({ lease: { type: ['object', 'null'] }, last_epoch: { type: 'integer' }, now_ms: { type: 'integer' } }),
      errors: ['lease_backend_unavailable'],
      handler: async (p) => {
        const { record, now_ms } = await leases.read(p.agent_id);
        return { lease: isLive(record, now_ms) ? toLease(record) : null, last_epoch: record?.epoch ?? 0, now_ms };
      },
    }),
    defineMethod({
      name: 'sync.fence_check',
      summary:
        'May this device perform run run_id of agent_id at epoch? already_committed (whatever the epoch), not_held, stale_epoch or proceed; only proceed sets may_dispatch.',
      params: object({
        agent_id: required(agentId, 'the agent'),
        run_id: required(runId, "the run (the side effect's idempotency key)"),
        epoch: required(epoch, 'the epoch this device holds'),
      }),
      result: resultObject({ decision: { type: 'object' }, may_dispatch: { type: 'boolean' }, checked_at_ms: { type: 'integer' } }),
      errors: ['lease_backend_unavailable'],
      handler: async (p) => {
        const run = session.state.run(p.agent_id, p.run_id);
        const { record, now_ms } = run?.status === 'committed' ? { record: null, now_ms: Date.now() } : await leases.read(p.agent_id);
        const decision = fenceDecision(run, record, device, p.epoch, now_ms);
        return { decision, may_dispatch: decision.decision === 'proceed', checked_at_ms: now_ms };
      },
    }),
    defineMethod({
      name: 'sync.record_intent',
      summary:
        'Records a run intent (pending, committed or failed) in the synced ledger; for a run already committed it records nothing and says so.',
      params: object({
        agent_id: required(agentId, 'the agent'),
        run_id: required(runId, 'the run'),
        epoch: required(epoch, 'the epoch the run was fenced at'),
        status: required(oneOf(INTENT_STATUSES), 'pending before the effect; committed or failed after it'),
      }),
      result: resultObject({
        recorded: { type: 'boolean' },
        op_id: { type: 'string' },
        reason: { type: 'string' },
        committed_op_id: { type: 'string' },
      }),
      handler: async (p) => {
        const run = session.state.run(p.agent_id, p.run_id);
        if (run?.status === 'committed') {
          return {
            recorded: false,
            reason: `run ${p.run_id} is already committed (op ${run.op_id}, epoch ${run.epoch}); nothing was recorded`,
            committed_op_id: run.op_id,
          };
        }
        const { op_id } = await session.append({
          surface: 'intent',
          scope: 'personal',
          payload: { id: p.run_id, agent_id: p.agent_id, epoch: p.epoch, status: p.status },
        });
        return { recorded: true, op_id };
      },
    }),
  ];
}
