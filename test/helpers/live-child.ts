import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { childScript } from './children.js';

/** Drives a `live-session` child: commands with answers, and a stream of change events. */
export class LiveChild {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private readonly waiters: Array<{
    match: (event: Record<string, unknown>) => boolean;
    resolve: (event: Record<string, unknown>) => void;
  }> = [];
  private stderr = '';
  /** Change events seen so far. */
  changes = 0;
  private changeWaiters: Array<() => void> = [];
  readonly exited: Promise<void>;

  private constructor(readonly process: ChildProcess) {
    createInterface({ input: process.stdout! }).on('line', (line) => this.receive(JSON.parse(line) as Record<string, unknown>));
    process.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => process.on('exit', () => resolve()));
  }

  /** Starts a device and resolves once it is live, with its ready event. */
  static async start(relay: string, dataDir: string, device: string): Promise<{ child: LiveChild; ready: Record<string, unknown> }> {
    const child = new LiveChild(
      spawn(process.execPath, [childScript('live-session'), relay, dataDir, device], { stdio: ['pipe', 'pipe', 'pipe'] }),
    );
    const ready = await child.next((event) => event.event === 'ready');
    return { child, ready };
  }

  call<T = Record<string, unknown>>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    this.process.stdin!.write(JSON.stringify({ id, cmd, ...args }) + '\n');
    return new Promise((resolve, reject) => this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject }));
  }

  /** The next event (or the first already-matching later one) satisfying `match`, within `timeoutMs`. */
  next(match: (event: Record<string, unknown>) => boolean, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching event within ${timeoutMs} ms; stderr: ${this.stderr}`)), timeoutMs);
      this.waiters.push({
        match,
        resolve: (event) => {
          clearTimeout(timer);
          resolve(event);
        },
      });
    });
  }

  /** Resolves once this device's state hash equals `hash` (now or after a change event). */
  async reaches(hash: string, timeoutMs = 60_000): Promise<void> {
    const waiting = this.next((event) => event.state_hash === hash, timeoutMs);
    const current = await this.call<{ state_hash: string }>('hash');
    if (current.state_hash === hash) return;
    await waiting;
  }

  /** Resolves true once more than `seen` change events have arrived, false after `timeoutMs`. */
  changedSince(seen: number, timeoutMs = 30_000): Promise<boolean> {
    if (this.changes > seen) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.changeWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  async stop(): Promise<void> {
    if (this.process.exitCode === null) await this.call('close').catch(() => undefined);
    await this.exited;
  }

  private receive(message: Record<string, unknown>): void {
    if (typeof message.id === 'number') {
      const pending = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error) pending?.reject(new Error(JSON.stringify(message.error)));
      else pending?.resolve(message.result);
      return;
    }
    if (message.event === 'changed') {
      this.changes++;
      for (const wake of this.changeWaiters.splice(0)) wake();
    }
    for (const waiter of [...this.waiters]) {
      if (waiter.match(message)) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve(message);
      }
    }
  }
}
