import { describe, expect, it } from 'vitest';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

interface Changed {
  change: number;
  surfaces: string[];
  origins: string[];
  folded: number;
  state_hash: string;
  rebased: boolean;
  coalesced: number;
}

/** Every `sync.changed` a client hears, and a way to wait for one that `wanted` accepts. */
function feed(client: RpcClient): { heard: Changed[]; next(wanted: (change: Changed) => boolean): Promise<Changed> } {
  const heard: Changed[] = [];
  const waiting = new Set<{ wanted: (change: Changed) => boolean; resolve: (change: Changed) => void }>();
  client.onNotification((method, params) => {
    if (method !== 'sync.changed') return;
    const change = params as Changed;
    heard.push(change);
    for (const waiter of waiting)
      if (waiter.wanted(change)) {
        waiting.delete(waiter);
        waiter.resolve(change);
      }
  });
  return {
    heard,
    next: (wanted) =>
      new Promise((resolve, reject) => {
        const waiter = { wanted, resolve };
        waiting.add(waiter);
        setTimeout(() => {
          if (waiting.delete(waiter)) reject(new Error(`no such sync.changed within 30 s; heard ${JSON.stringify(heard)}`));
        }, 30_000).unref();
      }),
  };
}

describe('the change feed', () => {
  it("tells every subscriber of a daemon about another connection's append, with the surface, filtered by surface", async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    const [writer, everything, conversations] = [await daemon.connect(), await daemon.connect(), await daemon.connect()];
    try {
      const all = feed(everything);
      const only = feed(conversations);
      await everything.call('sync.subscribe');
      await conversations.call('sync.subscribe', { surfaces: ['conversation'] });
      await expect(conversations.call('sync.subscribe', { surfaces: ['nope'] })).rejects.toThrow(/surfaces\[0\]/);

      const knowledge = all.next((change) => change.surfaces.includes('knowledge'));
      await writer.call('sync.append', { surface: 'knowledge', payload: { id: 'k1' } });
      expect(await knowledge).toMatchObject({ surfaces: ['knowledge'], origins: ['local'], folded: 1, rebased: false });

      const turn = only.next(() => true);
      const turnForAll = all.next((change) => change.surfaces.includes('conversation'));
      await writer.call('sync.record_turn', { conversation_id: 'c1', role: 'user', content: 'hello' });
      expect(await turn).toMatchObject({ surfaces: ['conversation'], origins: ['local'] });
      // The knowledge append was not for it: the first change it heard was the turn.
      expect(only.heard.map((change) => change.surfaces)).toEqual([['conversation']]);
      const { state_hash } = await writer.call<{ state_hash: string }>('sync.hash_state');
      expect((await turnForAll).state_hash).toBe(state_hash);
    } finally {
      await Promise.all([writer.close(), everything.close(), conversations.close()]);
      await daemon.stop();
    }
  });

  it("tells a subscriber of one daemon about another device's ops once they are folded", async () => {
    const relay = await tempDir();
    const [a, b] = [await DaemonProcess.start(await tempDir(), relay), await DaemonProcess.start(await tempDir(), relay)];
    const [clientA, clientB] = [await a.connect(), await b.connect()];
    try {
      const onB = feed(clientB);
      await clientB.call('sync.subscribe', { surfaces: ['skill'] });
      const remote = onB.next((change) => change.origins.includes('remote'));
      await clientA.call('sync.append', { surface: 'skill', payload: { id: 's1' } });
      expect(await remote).toMatchObject({ surfaces: ['skill'], origins: ['remote'], folded: 1 });
    } finally {
      await Promise.all([clientA.close(), clientB.close()]);
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
