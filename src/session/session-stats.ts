/**
 * Counters and latency summaries for `sync.stats`. Latencies keep the last 1 024 samples per
 * kind (a ring), enough for stable p50/p99 without growing with uptime; every sample also goes to
 * the listeners `onSample` adds (the daemon's histograms, proposals/daemon.md §Metrics).
 *
 * Kinds: `append` and `pump` (their latency), `propagation` (from a remote op's stamp to its fold
 * here, in wall-clock ms, so it includes the clocks' skew).
 */
const RING = 1024;

export class SessionStats {
  readonly counters = {
    appends: 0,
    pumps: 0,
    pump_errors: 0,
    pushed: 0,
    push_deduped: 0,
    pulled: 0,
    folded: 0,
    rebases: 0,
    checkpoints_published: 0,
    /** Checkpoints this device published as the merge of its base with another (a rebase, or a chain restart). */
    checkpoints_merged: 0,
    compactions: 0,
    /** Other devices' checkpoints this device would not compact onto: not what its own journal folds to at their frontier. */
    checkpoints_refused: 0,
  };
  private readonly samples = new Map<string, { values: number[]; next: number; total: number }>();
  private readonly listeners: Array<(kind: string, ms: number) => void> = [];

  onSample(listener: (kind: string, ms: number) => void): void {
    this.listeners.push(listener);
  }

  record(kind: string, ms: number): void {
    for (const listener of this.listeners) listener(kind, ms);
    let ring = this.samples.get(kind);
    if (!ring) {
      ring = { values: [], next: 0, total: 0 };
      this.samples.set(kind, ring);
    }
    if (ring.values.length < RING) ring.values.push(ms);
    else ring.values[ring.next] = ms;
    ring.next = (ring.next + 1) % RING;
    ring.total++;
  }

  /** Per kind: `count` samples since the start, and the percentiles and maximum of the last `window` of them. */
  latencies(): Record<string, Latency> {
    const out: Record<string, Latency> = {};
    for (const [kind, ring] of this.samples) {
      const sorted = [...ring.values].sort((a, b) => a - b);
      const at = (p: number) => round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!);
      out[kind] = { count: ring.total, window: sorted.length, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: round(sorted.at(-1)!) };
    }
    return out;
  }
}

export interface Latency {
  readonly count: number;
  readonly window: number;
  readonly p50_ms: number;
  readonly p99_ms: number;
  readonly max_ms: number;
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
