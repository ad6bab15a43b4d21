import { OpsyncRpcError, type OpsyncClient } from './client.js';

/** The run of an agent a side effect belongs to. */
export interface FencedRun {
  readonly agent_id: string;
  readonly run_id: string;
  /** How long the lease lasts from each acquire or renew (default 60 000 ms). */
  readonly ttl_ms?: number;
}

/** What the effect gets: the epoch it runs at, and the key its own dedup must use. */
export interface EffectContext {
  readonly epoch: number;
  /** `agent_id/run_id`: the same for every attempt of the run, on every device. */
  readonly idempotencyKey: string;
}

export type Fenced<T> =
  | { readonly status: 'committed'; readonly result: T; readonly epoch: number; readonly op_id: string }
  /** A device (this one included) committed the run before: the effect did not run again. */
  | { readonly status: 'already_committed'; readonly op_id: string; readonly committed_by: string | null };

/** Why the effect may not run here now: another device holds the lease (`lease_held`), or it moved on (`stale_epoch`, `not_held`). */
export class FenceRefused extends Error {
  override readonly name = 'FenceRefused';
  constructor(
    readonly kind: 'lease_held' | 'stale_epoch' | 'not_held',
    message: string,
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
  }
}

/** The leases a client holds, by agent: reused (renewed) by later runs of the same agent. */
const held = new WeakMap<OpsyncClient, Map<string, number>>();

/**
 * Runs `effect` under the lease protocol (README §Leases and the fence, proposals/leases.md): hold
 * the agent's lease (acquire, or renew the one this client holds), `sync.fence_check`, record the
 * intent `pending`, run the effect with its idempotency key, record it `committed` — or `failed`,
 * and rethrow, when the effect throws. A run already committed anywhere returns
 * `already_committed` without running the effect. The lease is kept for the agent's next run.
 */
export async function fenced<T>(client: OpsyncClient, run: FencedRun, effect: (context: EffectContext) => Promise<T>): Promise<Fenced<T>> {
  const { agent_id, run_id } = run;
  const epoch = await holdLease(client, agent_id, run.ttl_ms ?? 60_000);
  const { decision } = await client.sync.fence_check({ agent_id, run_id, epoch });
  if (decision.decision === 'already_committed')
    return { status: 'already_committed', op_id: decision.op_id, committed_by: decision.committed_by };
  if (decision.decision === 'stale_epoch')
    throw new FenceRefused('stale_epoch', `Epoch ${epoch} of ${agent_id} is stale: ${decision.holder} holds ${decision.current_epoch}.`, {
      ...decision,
    });
  if (decision.decision === 'not_held')
    throw new FenceRefused('not_held', `The lease of ${agent_id} lapsed before run ${run_id} could start.`);
  const pending = await client.sync.record_intent({ agent_id, run_id, epoch, status: 'pending' });
  if (!pending.recorded) return { status: 'already_committed', op_id: pending.committed_op_id ?? '', committed_by: null };
  let result: T;
  try {
    result = await effect({ epoch, idempotencyKey: `${agent_id}/${run_id}` });
  } catch (error) {
    await client.sync.record_intent({ agent_id, run_id, epoch, status: 'failed' }).catch(() => undefined);
    throw error;
  }
  const committed = await client.sync.record_intent({ agent_id, run_id, epoch, status: 'committed' });
  return { status: 'committed', result, epoch, op_id: committed.op_id ?? committed.committed_op_id ?? '' };
}

/** The epoch of the agent's lease, held now: the one this client holds renewed, or a new one. */
async function holdLease(client: OpsyncClient, agent: string, ttlMs: number): Promise<number> {
  const leases = held.get(client) ?? new Map<string, number>();
  held.set(client, leases);
  const epoch = leases.get(agent);
  if (epoch !== undefined) {
    try {
      return (await client.lease.renew({ agent_id: agent, epoch, ttl_ms: ttlMs })).epoch;
    } catch (error) {
      if (!(error instanceof OpsyncRpcError) || error.kind !== 'lease_lost') throw error;
      leases.delete(agent);
    }
  }
  try {
    const lease = await client.lease.acquire({ agent_id: agent, ttl_ms: ttlMs });
    leases.set(agent, lease.epoch);
    return lease.epoch;
  } catch (error) {
    if (error instanceof OpsyncRpcError && error.kind === 'lease_held') throw new FenceRefused('lease_held', error.message, error.data);
    throw error;
  }
}
