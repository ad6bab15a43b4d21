import { describe, expect, it } from 'vitest';
import { SessionStats } from '../../src/session/session-stats.js';

describe('session stats', () => {
  it('counts every sample since the start, takes percentiles over the last 1 024, and hands each sample to its listeners', () => {
    const stats = new SessionStats();
    const heard: number[] = [];
    stats.onSample((kind, ms) => kind === 'append' && heard.push(ms));
    for (let i = 0; i < 1_100; i++) stats.record('append', i < 76 ? 1_000 : 1);
    expect(stats.latencies().append).toEqual({ count: 1_100, window: 1_024, p50_ms: 1, p99_ms: 1, max_ms: 1 });
    expect(heard).toHaveLength(1_100);
  });
});
