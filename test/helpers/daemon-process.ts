import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { encodeKeyFile } from '../../src/crypto/scope-key.js';
import { RpcClient } from '../../src/rpc/rpc-client.js';
import { running } from './running-daemons.js';
import { placeKey, startArgs } from '../../src/testing/daemons.js';
import { PERSONAL_KEY } from './world.js';

/**
 * A real daemon process (`node dist/src/cli/main.js start`) on a loopback port chosen by the
 * OS, sharing the test's personal key so that daemons on one relay read each other's ops.
 */
export class DaemonProcess {
  private output = '';
  private readonly lines = new EventEmitter();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the URL from the daemon's "listening" log line. */
  private readonly listening: Promise<string>;

  private constructor(
    readonly dataDir: string,
    readonly process: ChildProcess,
  ) {
    process.stderr!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    running.add(process);
    this.exited = new Promise((resolve) =>
      process.on('exit', (code, signal) => {
        running.delete(process);
        resolve({ code, signal });
      }),
    );
    this.listening = new Promise((resolve, reject) => {
      createInterface({ input: process.stdout! }).on('line', (line) => {
        this.output += line + '\n';
        this.lines.emit('line');
        const entry = JSON.parse(line) as { msg?: string; url?: string };
        if (entry.msg?.startsWith('opsync listening') && entry.url) resolve(entry.url);
      });
      void this.exited.then(() => reject(new Error(`the daemon exited before it was ready:\n${this.output}`)));
    });
  }

  /**
   * Real limits of the OS, no mocks: `fileSizeLimitKiB` starts the daemon under `ulimit -f` (with
   * SIGXFSZ ignored), so a write past that size fails with EFBIG as on a full disk;
   * `openFilesLimit` under `ulimit -n`, so that it runs out of file descriptors.
   */
  static async start(
    dataDir: string,
    relay: string,
    extra: readonly string[] = [],
    { fileSizeLimitKiB, openFilesLimit }: { fileSizeLimitKiB?: number; openFilesLimit?: number } = {},
  ): Promise<DaemonProcess> {
    await placeKey(dataDir, encodeKeyFile(PERSONAL_KEY));
    const argv = [process.execPath, ...startArgs(dataDir, relay, 'info', extra)];
    const limits = [
      ...(fileSizeLimitKiB === undefined ? [] : [`trap '' XFSZ; ulimit -f ${fileSizeLimitKiB}`]),
      ...(openFilesLimit === undefined ? [] : [`ulimit -n ${openFilesLimit}`]),
    ];
    const [command, ...args] = limits.length === 0 ? argv : ['bash', '-c', `${limits.join('; ')}; exec "$@"`, 'bash', ...argv];
    const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const daemon = new DaemonProcess(dataDir, child);
    await daemon.ready();
    return daemon;
  }

  /** Resolves once the daemon logs that it listens (it has written daemon.json by then). */
  private async ready(timeoutMs = 60_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the daemon was not ready within ${timeoutMs} ms:\n${this.output}`)), timeoutMs);
    });
    try {
      const url = await Promise.race([this.listening, timeout]);
      if ((await this.info())?.url !== url) throw new Error(`daemon.json does not name ${url}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async info(): Promise<{ url: string; device_id: string; pid: number } | null> {
    try {
      const info = JSON.parse(await readFile(join(this.dataDir, 'daemon.json'), 'utf8')) as { url: string; device_id: string; pid: number };
      return info.pid === this.process.pid ? info : null;
    } catch {
      return null;
    }
  }

  async connect(): Promise<RpcClient> {
    const info = await this.info();
    if (!info) throw new Error('the daemon is not running');
    return RpcClient.connect(info.url, await this.token());
  }

  token(): Promise<string> {
    return readFile(join(this.dataDir, 'token'), 'utf8').then((text) => text.trim());
  }

  logs(): string {
    return this.output;
  }

  /** The JSON log lines so far. */
  logEntries(): Array<Record<string, unknown>> {
    return this.output
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** Resolves with the first JSON log line `wanted` accepts, once the daemon has written it; fails after `timeoutMs`. */
  async logged(wanted: (entry: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.logEntries().find(wanted);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the daemon did not log the line awaited within ${timeoutMs} ms:\n${this.output}`);
      await Promise.race([once(this.lines, 'line'), new Promise((resolve) => setTimeout(resolve, left))]);
    }
  }

  /** SIGTERM and wait for a clean exit. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGTERM');
    return this.exited;
  }

  async kill9(): Promise<void> {
    this.process.kill('SIGKILL');
    await this.exited;
  }
}

export function cli(): string {
  return join(process.cwd(), 'dist', 'src', 'cli', 'main.js');
}
