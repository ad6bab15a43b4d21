import { OpsyncError } from '../util/opsync-error.js';
import type { Journal, JournalEntry, JournalVisitor, RewritePlan } from './journal.js';

/**
 * In-memory journals for tests and the seeded simulation. The store outlives the journals
 * opened on it, the way a disk outlives a process: `crash(name)` kills the open journal (its
 * later appends fail) and frees the name, keeping every entry whose append resolved.
 */
export class MemoryJournalStore {
  private readonly files = new Map<string, { entries: JournalEntry[]; holder: MemoryJournal | null }>();

  async open(name: string, visit: JournalVisitor): Promise<MemoryJournal> {
    await Promise.resolve();
    let file = this.files.get(name);
    if (!file) {
      file = { entries: [], holder: null };
      this.files.set(name, file);
    }
    if (file.holder) {
      throw new OpsyncError('journal_locked', `The journal ${name} is already open; only one writer may hold it.`, { lock: name });
    }
    file.entries.forEach((entry, index) => visit(entry, index + 1));
    const journal = new MemoryJournal(
      name,
      file.entries,
      (replacement) => {
        file.entries = replacement;
      },
      () => {
        file.holder = null;
      },
    );
    file.holder = journal;
    return journal;
  }

  crash(name: string): void {
    const file = this.files.get(name);
    file?.holder?.kill();
    if (file) file.holder = null;
  }

  entries(name: string): readonly JournalEntry[] {
    return this.files.get(name)?.entries ?? [];
  }
}

export class MemoryJournal implements Journal {
  private dead = false;

  constructor(
    readonly location: string,
    private entries: JournalEntry[],
    private readonly replace: (entries: JournalEntry[]) => void,
    private readonly release: () => void,
  ) {}

  async append(entries: readonly JournalEntry[]): Promise<void> {
    this.assertAlive();
    this.entries.push(...entries);
    await Promise.resolve();
  }

  async replay(visit: JournalVisitor): Promise<void> {
    this.assertAlive();
    const snapshot = this.entries.slice();
    await Promise.resolve();
    snapshot.forEach((entry, index) => visit(entry, index + 1));
  }

  async rewrite(plan: RewritePlan): Promise<void> {
    this.assertAlive();
    await Promise.resolve();
    this.entries = [...plan.head, ...this.entries.filter((entry) => plan.keep(entry))];
    this.replace(this.entries);
  }

  async close(): Promise<void> {
    if (this.dead) return;
    this.dead = true;
    await Promise.resolve();
    this.release();
  }

  kill(): void {
    this.dead = true;
  }

  private assertAlive(): void {
    if (this.dead) throw new OpsyncError('session_closed', `The journal ${this.location} is closed.`, { location: this.location });
  }
}
