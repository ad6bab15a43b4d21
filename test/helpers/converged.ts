import type { RpcClient } from '../../src/rpc/ws-transport.js';

export type Hash = { state_hash: string; records: number };

/**
 * Resolves once every client reports the same state hash. It re-checks on each `sync.changed`
 * notification (with a 5 s re-check as a safety net) and fails after `timeoutMs`.
 */
export async function converged(clients: readonly RpcClient[], timeoutMs = 60_000): Promise<Hash> {
  const deadline = Date.now() + timeoutMs;
  let wake: () => void = () => {};
  const stops = clients.map((client) => client.onNotification(() => wake()));
  await Promise.all(clients.map((client) => client.call('sync.subscribe')));
  try {
    for (;;) {
      const changed = new Promise<void>((resolve) => (wake = resolve));
      const hashes = await Promise.all(clients.map((client) => client.call<Hash>('sync.hash_state')));
      if (hashes.every((h) => h.state_hash === hashes[0]!.state_hash)) return hashes[0]!;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no convergence within ${timeoutMs} ms: ${JSON.stringify(hashes)}`);
      await Promise.race([changed, new Promise((resolve) => setTimeout(resolve, Math.min(left, 5_000)))]);
    }
  } finally {
    stops.forEach((stop) => stop());
  }
}
