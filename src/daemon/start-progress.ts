import type { Progress, ProgressStep } from '../util/progress.js';

/** Progress lines of one step at most this often (its first and last always). */
const EVERY_MS = 1_000;

export interface ProgressLog {
  info(fields: object, message: string): void;
}

/** What a step is, for people: `opsync wait` and the pretty log print it. */
export const STEP_NAMES: Readonly<Record<ProgressStep, string>> = {
  journal: 'reading the journal (bytes)',
  checkpoint: 'loading a checkpoint (records)',
  compaction: 'rewriting the journal onto a checkpoint (bytes)',
};

/**
 * The daemon's progress reports (proposals/daemon.md §Progress): a log line when a step begins,
 * at most one a second while it runs, and one when it ends, each with done and total. While the
 * daemon starts, each line also goes to `onStarting` (start.json, which `opsync wait` shows).
 */
export class StartProgress {
  private readonly lastAt = new Map<ProgressStep, number>();
  private starting: ((step: ProgressStep, done: number, total: number) => Promise<void>) | null;
  private written: Promise<void> = Promise.resolve();

  constructor(
    private readonly log: ProgressLog,
    onStarting: (step: ProgressStep, done: number, total: number) => Promise<void>,
    private readonly now: () => number = Date.now,
  ) {
    this.starting = onStarting;
  }

  readonly report: Progress = (step, done, total) => {
    const at = this.now();
    const last = this.lastAt.get(step);
    const first = last === undefined;
    const finished = done >= total;
    if (!first && !finished && at - last < EVERY_MS) return;
    if (finished) this.lastAt.delete(step);
    else this.lastAt.set(step, at);
    this.log.info({ step, done, total }, `${STEP_NAMES[step]}: ${done} of ${total}`);
    const starting = this.starting;
    if (starting) this.written = this.written.then(() => starting(step, done, total)).catch(() => undefined);
  };

  /** The start is over: no more start.json writes, and the pending one has landed. */
  async started(): Promise<void> {
    this.starting = null;
    await this.written;
  }
}
