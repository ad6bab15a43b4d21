/** Small promise tools for ordering async work without locks. */

/** Runs tasks one at a time, in call order; a failed task does not stop the ones after it. */
export class Serializer {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Resolves once every task queued so far has settled. */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}

/**
 * A gate that callers pass through, and that exclusive work closes for its duration (appends
 * wait while a rebase rewrites the journal).
 */
export class Gate {
  private closedUntil: Promise<void> | null = null;

  async pass(): Promise<void> {
    while (this.closedUntil) await this.closedUntil;
  }

  async hold<T>(work: () => Promise<T>): Promise<T> {
    await this.pass();
    let open!: () => void;
    this.closedUntil = new Promise((resolve) => (open = resolve));
    try {
      return await work();
    } finally {
      this.closedUntil = null;
      open();
    }
  }
}
