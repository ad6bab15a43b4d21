import { stat } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { startDaemons } from '../../src/testing/daemons.js';

describe('opsync/testing', () => {
  it('starts real daemons on one relay with one key, ready for typed clients, and stops them all', async () => {
    const cluster = await startDaemons(2);
    let stopped = false;
    try {
      const [a, b] = cluster.daemons;
      expect(new Set(cluster.daemons.map((daemon) => daemon.deviceId)).size).toBe(2);
      const [clientA, clientB] = [await a!.client(), await b!.client()];
      await clientA.sync.append({ surface: 'knowledge', payload: { id: 'shared' } });
      await clientA.sync.pump();
      await clientB.sync.pump();
      // One key: B reads what A wrote.
      expect((await clientB.sync.records({ surface: 'knowledge' })).records.map((record) => record.key)).toEqual(['shared']);
      await cluster.stop();
      stopped = true;
      await expect(stat(cluster.relay)).rejects.toThrow(/ENOENT/);
      await expect(clientA.sync.status(undefined, { timeoutMs: 1_000 })).rejects.toMatchObject({ kind: 'closed' });
    } finally {
      if (!stopped) await cluster.stop();
    }
  });

  it("fails with the start's own sentence when a daemon cannot start", async () => {
    await expect(startDaemons(1, { args: ['--lease-backend', 'nope'] })).rejects.toThrow(/--lease-backend must be dir, postgres or memory/);
  });
});
