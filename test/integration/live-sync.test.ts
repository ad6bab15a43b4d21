import { describe, expect, it } from 'vitest';
import { LiveChild } from '../helpers/live-child.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

describe('live sync between processes through a relay directory', () => {
  it('converges two devices with no pump call (the watcher path), then bootstraps a third from a checkpoint', async () => {
    const relay = await tempDir();
    const { child: a } = await LiveChild.start(relay, await tempDir(), 'laptop');
    const { child: b } = await LiveChild.start(relay, await tempDir(), 'desktop');
    const started: LiveChild[] = [a, b];
    try {
      for (let i = 0; i < 20; i++) {
        await a.call('append', { surface: 'knowledge', payload: { id: `a${i}`, text: 'from the laptop' } });
        await b.call('append', { surface: 'conversation', payload: { role: 'user', content: `turn ${i}`, timestamp: i } });
      }
      await a.call('append', { surface: 'declagent', payload: { id: 'agent', model: 'last' } });
      // Each side's state after its own appends and whatever it has pulled; both must reach the union.
      const expected = await waitForEqual(a, b);
      expect(expected.records).toBe(41);

      const published = await a.call<{ published: boolean; checkpoint_hash: string }>('checkpoint');
      expect(published.published).toBe(true);
      const compacted = await a.call<{ compacted: boolean; relay_dropped_ops: number }>('compact');
      expect(compacted).toMatchObject({ compacted: true });
      expect(compacted.relay_dropped_ops).toBeGreaterThan(0);

      const { child: c, ready } = await LiveChild.start(relay, await tempDir(), 'phone');
      started.push(c);
      expect(ready.base_checkpoint).toBe(published.checkpoint_hash);
      await c.reaches(expected.state_hash);
      await c.call('append', { surface: 'knowledge', payload: { id: 'from-phone' } });
      const final = await c.call<{ state_hash: string }>('hash');
      await Promise.all([a.reaches(final.state_hash), b.reaches(final.state_hash)]);
    } finally {
      await Promise.all(started.map((child) => child.stop()));
    }
  });
});

/** Waits until both devices report the same state hash, driven only by their change events. */
async function waitForEqual(a: LiveChild, b: LiveChild): Promise<{ state_hash: string; records: number }> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const seen = [a.changes, b.changes] as const;
    const [ha, hb] = await Promise.all([
      a.call<{ state_hash: string; records: number }>('hash'),
      b.call<{ state_hash: string; records: number }>('hash'),
    ]);
    if (ha.state_hash === hb.state_hash) return ha;
    if (!(await Promise.race([a.changedSince(seen[0]), b.changedSince(seen[1])]))) break;
  }
  throw new Error('the devices did not converge');
}
