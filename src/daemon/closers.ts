/**
 * What a start opened, to close in reverse order: everything when a start fails part-way (a port
 * in use must not leave a session or a relay open), and everything at stop. Every close runs even
 * when an earlier one fails; the first failure is thrown once all ran.
 */
export class Closers {
  private readonly stack: Array<() => Promise<void>> = [];

  /** Remembers how to close `opened`, and returns it. */
  add<T>(opened: T, close: (opened: T) => Promise<void>): T {
    this.stack.push(() => close(opened));
    return opened;
  }

  async closeAll(): Promise<void> {
    const failures: Error[] = [];
    for (const close of this.stack.splice(0).reverse()) {
      await close().catch((error: unknown) => failures.push(error instanceof Error ? error : new Error(String(error))));
    }
    if (failures.length > 0) throw failures[0]!;
  }
}
