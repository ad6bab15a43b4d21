import type { RpcClient } from '../../src/rpc/rpc-client.js';

export type Hash = { state_hash: string; records: number };

/**
 * Resolves with the value `check` returns once it is not undefined. It re-checks after each
 * notification any of `clients` hears (subscribing them to `sync.changed`), with a 5 s re-check
 * as a safety net, and fails after `timeoutMs`.
 */
export async function until<T>(clients: readonly RpcClient[], check: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let wake: () => void = () => {};
  const stops = clients.map((client) => client.onNotification(() => wake()));
  await Promise.all(clients.map((client) => client.call('sync.subscribe')));
  try {
    for (;;) {
      const changed = new Promise<void>((resolve) => (wake = resolve));
      const value = await check();
      if (value !== undefined) return value;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`condition not reached within ${timeoutMs} ms`);
      await Promise.race([changed, new Promise((resolve) => setTimeout(resolve, Math.min(left, 5_000)))]);
    }
  } finally {
    stops.forEach((stop) => stop());
  }
}

/** Resolves once every client reports the same state hash. */
export async function converged(clients: readonly RpcClient[], timeoutMs = 60_000): Promise<Hash> {
  let last: Hash[] = [];
  return until(
    clients,
    async () => {
      last = await Promise.all(clients.map((client) => client.call<Hash>('sync.hash_state')));
      return last.every((h) => h.state_hash === last[0]!.state_hash) ? last[0] : undefined;
    },
    timeoutMs,
  ).catch((error: unknown) => {
    throw new Error(`no convergence within ${timeoutMs} ms: ${JSON.stringify(last)}`, { cause: error });
  });
}
