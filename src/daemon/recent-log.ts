/** Warnings and errors kept at most for the status page. */
const KEPT = 50;

export interface LogEntry {
  readonly at_ms: number;
  readonly level: 'warn' | 'error' | 'fatal';
  readonly message: string;
  /** The named failure's code, when the line carried one. */
  readonly code: string | null;
}

/**
 * The daemon's last warnings and errors, newest last, for the status page (proposals/daemon.md
 * §Status page): fed by a pino hook, so whatever the daemon logs at warn or above is here too.
 */
export class RecentLog {
  private readonly entries: LogEntry[] = [];

  /** For pino's `hooks.logMethod`: its arguments and level (40 warn, 50 error, 60 fatal). */
  note(args: readonly unknown[], level: number, now: number = Date.now()): void {
    if (level < 40) return;
    const [first, second] = args;
    const said = typeof first === 'string' ? first : typeof second === 'string' ? second : '';
    const fields =
      typeof first === 'object' && first !== null ? (first as { err?: { code?: unknown; message?: unknown }; why?: unknown }) : {};
    const code = typeof fields.err?.code === 'string' ? fields.err.code : null;
    // What the line's fields say beyond its message: the error's sentence, or why a request was refused.
    const detail = typeof fields.err?.message === 'string' ? fields.err.message : typeof fields.why === 'string' ? fields.why : null;
    const message = detail === null ? said : `${said}: ${detail}`;
    this.entries.push({ at_ms: now, level: level >= 60 ? 'fatal' : level >= 50 ? 'error' : 'warn', message: message.slice(0, 500), code });
    if (this.entries.length > KEPT) this.entries.shift();
  }

  list(): readonly LogEntry[] {
    return this.entries;
  }
}
