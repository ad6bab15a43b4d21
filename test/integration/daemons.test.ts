import { describe, expect, it } from 'vitest';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { converged } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

describe('real daemons on one relay directory, driven only through their WebSockets', () => {
  it('converge with no sync.pump call, and each subscriber receives sync.changed', async () => {
    const relay = await tempDir();
    const daemons = await Promise.all([DaemonProcess.start(await tempDir(), relay), DaemonProcess.start(await tempDir(), relay)]);
    const [a, b] = await Promise.all(daemons.map((d) => d.connect()));
    try {
      const changedOn = new Map<RpcClient, unknown[]>([
        [a!, []],
        [b!, []],
      ]);
      for (const client of [a!, b!]) {
        client.onNotification((method, params) => method === 'sync.changed' && changedOn.get(client)!.push(params));
        await client.call('sync.subscribe');
      }
      for (let i = 0; i < 25; i++) {
        await a!.call('sync.append', { surface: 'knowledge', payload: { id: `a${i}`, text: 'from a' } });
        await b!.call('sync.append', { surface: 'registry:tools', payload: { id: `t${i % 5}`, v: i } });
      }
      const final = await converged([a!, b!]);
      expect(final.records).toBe(30);
      expect(changedOn.get(a!)!.length).toBeGreaterThan(0);
      expect(changedOn.get(b!)!.length).toBeGreaterThan(0);
      expect(changedOn.get(b!)![0]).toMatchObject({
        folded: expect.any(Number) as unknown,
        state_hash: expect.stringMatching(/^sh-/) as unknown,
      });
    } finally {
      await Promise.all([a!.close(), b!.close()]);
      await Promise.all(daemons.map((d) => d.stop()));
    }
  });

  it('three daemons with interleaved writes converge', async () => {
    const relay = await tempDir();
    const daemons = await Promise.all([0, 1, 2].map(async () => DaemonProcess.start(await tempDir(), relay)));
    const clients = await Promise.all(daemons.map((d) => d.connect()));
    try {
      await Promise.all(
        clients.map(async (client, n) => {
          for (let i = 0; i < 30; i++) {
            await client.call('sync.append', { surface: 'declagent', payload: { id: `agent-${i % 7}`, by: n, i } });
            if (i % 3 === 0)
              await client.call('sync.append', {
                surface: 'conversation',
                payload: { conversation_id: 'shared', role: 'user', content: `${n}:${i}`, timestamp: i },
              });
          }
        }),
      );
      const final = await converged(clients);
      expect(final.records).toBe(7 + 30);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await Promise.all(daemons.map((d) => d.stop()));
    }
  });

  it('keeps every answered op across a kill -9 during pipelined appends, and the peer converges without a fork', async () => {
    const relay = await tempDir();
    const dirA = await tempDir();
    let a = await DaemonProcess.start(dirA, relay);
    const b = await DaemonProcess.start(await tempDir(), relay);
    let clientA = await a.connect();
    const clientB = await b.connect();
    const answered = new Set<string>();
    try {
      const burst = Array.from({ length: 2000 }, (_, i) =>
        clientA.call<{ op_id: string }>('sync.append', { surface: 'knowledge', payload: { id: `k${i}`, text: 'burst' } }).then(
          (result) => {
            answered.add(`k${i}`);
            if (answered.size === 300) void a.kill9();
            return result;
          },
          () => null,
        ),
      );
      await Promise.all(burst);
      expect(answered.size).toBeGreaterThanOrEqual(300);
      expect(answered.size).toBeLessThan(2000);

      a = await DaemonProcess.start(dirA, relay);
      clientA = await a.connect();
      const held = await allKeys(clientA, 'knowledge');
      for (const id of answered) expect(held.has(id), `op ${id} was answered before the kill`).toBe(true);
      await clientA.call('sync.append', { surface: 'knowledge', payload: { id: 'after-restart' } });
      await converged([clientA, clientB]);
      for (const client of [clientA, clientB]) {
        const status = await client.call<{ counts: { rejected: Record<string, number> }; last_error: string | null }>('sync.status');
        expect(status.counts.rejected).toEqual({});
        expect(status.last_error ?? '').not.toMatch(/fork/);
      }
      const verified = await clientA.call<{ ok: boolean }>('sync.verify');
      expect(verified.ok).toBe(true);
    } finally {
      await Promise.all([clientA.close(), clientB.close()]);
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});

/** Every record key of a surface, read page by page. */
async function allKeys(client: RpcClient, surface: string): Promise<Set<string>> {
  const keys = new Set<string>();
  let after: string | null = null;
  do {
    const page: { records: Array<{ key: string }>; next: string | null } = await client.call('sync.records', {
      surface,
      limit: 1000,
      ...(after ? { after } : {}),
    });
    for (const record of page.records) keys.add(record.key);
    after = page.next;
  } while (after !== null);
  return keys;
}
