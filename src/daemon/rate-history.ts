/** One sample per interval, for the last ten minutes. */
export const RATE_INTERVAL_MS = 10_000;
const KEPT = 60;

/**
 * How many appends and pumps each interval of the last minutes saw, for the status page's charts
 * (proposals/daemon.md §Status page): the running totals are read every RATE_INTERVAL_MS and each
 * interval keeps the difference.
 */
export class RateHistory {
  private readonly series = new Map<string, number[]>();
  private last: Record<string, number>;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly read: () => Record<string, number>) {
    this.last = { ...read() };
    this.timer = setInterval(() => this.sample(), RATE_INTERVAL_MS);
    this.timer.unref();
  }

  /** Each series, oldest interval first, ending with the interval under way (so far). */
  snapshot(): { interval_ms: number; series: Record<string, number[]> } {
    const now = this.read();
    const series = Object.keys(now).map((name) => [
      name,
      [...(this.series.get(name) ?? []), Math.max(0, now[name]! - (this.last[name] ?? 0))],
    ]);
    return { interval_ms: RATE_INTERVAL_MS, series: Object.fromEntries(series) as Record<string, number[]> };
  }

  sample(): void {
    const now = this.read();
    for (const [name, total] of Object.entries(now)) {
      const values = this.series.get(name) ?? [];
      values.push(Math.max(0, total - (this.last[name] ?? 0)));
      if (values.length > KEPT) values.shift();
      this.series.set(name, values);
    }
    this.last = { ...now };
  }

  close(): void {
    clearInterval(this.timer);
  }
}
