import { execFileSync } from 'node:child_process';

/**
 * Benchmark rows and their two renderings: a table for people, JSON lines for machines
 * (`{"name","value","unit","target"}`, target like ">= 300000" or "<= 20" in the row's unit,
 * or "reference" for a ceiling measured in the same run, or "report" for a figure without a target).
 */
export interface Row {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly target: string;
  /** Context: the ceiling this figure is a fraction of, sample counts, sizes. */
  readonly note?: string;
}

export function verdict(row: Row): 'pass' | 'FAIL' | '' {
  const match = /^(>=|<=)\s*([\d.]+)$/.exec(row.target);
  if (!match) return '';
  const bound = Number(match[2]);
  const ok = match[1] === '>=' ? row.value >= bound : row.value <= bound;
  return ok ? 'pass' : 'FAIL';
}

export function renderTable(rows: readonly Row[]): string {
  const cells = rows.map((r) => [r.name, formatValue(r.value), r.unit, r.target, verdict(r), r.note ?? '']);
  const header = ['figure', 'value', 'unit', 'target', '', 'note'];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) =>
    c
      .map((x, i) => (i === 1 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n');
}

export function renderJson(rows: readonly Row[]): string {
  return rows.map((r) => JSON.stringify({ name: r.name, value: r.value, unit: r.unit, target: r.target })).join('\n');
}

function formatValue(value: number): string {
  if (Number.isInteger(value)) return value.toLocaleString('en-US');
  return value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toPrecision(3);
}

/** Progress for long runs, on stderr and only on a terminal. */
export function progress(message: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[2K${message}`);
}

export function progressDone(): void {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[2K');
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Isolates one measurement from the previous one: collects garbage (needs --expose-gc) and
 * flushes dirty pages to disk, so that writeback of the last benchmark's files does not slow
 * the fsyncs of the next.
 */
export function settle(): void {
  (globalThis as { gc?: () => void }).gc?.();
  execFileSync('sync');
}
