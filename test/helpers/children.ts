import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/** The compiled path of a child script (test/children/<name>.ts); global setup builds it. */
export function childScript(name: string): string {
  const path = join(process.cwd(), 'dist', 'test', 'children', `${name}.js`);
  if (!existsSync(path)) throw new Error(`${path} is missing: run "npm run build" first`);
  return path;
}

export interface LineChild {
  readonly process: ChildProcess;
  /** Resolves with the first line satisfying `match` (rejects on exit first, or after `timeoutMs`). */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  onLine(listener: (line: string) => void): void;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

/** Spawns a Node child and exposes its stdout line by line (its stdin is a pipe the test may end). */
export function spawnLines(script: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): LineChild {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env });
  const listeners: Array<(line: string) => void> = [];
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  createInterface({ input: child.stdout }).on('line', (line) => listeners.forEach((l) => l(line)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  return {
    process: child,
    exited,
    stderr: () => stderr,
    onLine: (listener) => listeners.push(listener),
    waitForLine(match, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching line within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
        listeners.push((line) => {
          if (match(line)) {
            clearTimeout(timer);
            resolve(line);
          }
        });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`child exited (code ${code}, signal ${signal}) before the line; stderr: ${stderr}`));
        });
      });
    },
  };
}
