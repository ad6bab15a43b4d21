import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { encodeKeyFile, scopeKeyFromBytes } from '../crypto/scope-key.js';
import { fromDataDir, type OpsyncClient } from '../client/node.js';

/** One real daemon of a test cluster. */
export interface TestDaemon {
  readonly dataDir: string;
  readonly url: string;
  readonly deviceId: string;
  /** A typed client of this daemon (`opsync/client`); the cluster closes it on stop. */
  client(): Promise<OpsyncClient>;
  /** SIGTERM, and resolves once the process has exited. */
  stop(): Promise<void>;
}

export interface TestCluster {
  /** The relay folder every daemon shares. */
  readonly relay: string;
  readonly daemons: readonly TestDaemon[];
  /** Stops every daemon and removes the folders the cluster made. */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** Extra `opsync start` flags for every daemon (`--lease-backend memory` …). */
  readonly args?: readonly string[];
  /** How long a daemon may take to be ready (default 60 000 ms). */
  readonly readyTimeoutMs?: number;
}

const HERE = fileURLToPath(import.meta.url);
/** The `opsync` command beside this module; run from its TypeScript source (this repository's own tests), the build's. */
const CLI = HERE.endsWith('.ts')
  ? join(dirname(HERE), '..', '..', 'dist', 'src', 'cli', 'main.js')
  : join(dirname(HERE), '..', 'cli', 'main.js');

/**
 * `opsync/testing` (README §Test suites): starts `count` real daemons — separate processes, each
 * with its own temporary data directory, on loopback ports the OS picks — sharing one relay
 * folder and one personal key, and resolves once every one is ready. For test suites of hosts
 * that run several devices; `stop()` ends them all and removes the folders.
 */
export async function startDaemons(count: number, options: ClusterOptions = {}): Promise<TestCluster> {
  const root = await mkdtemp(join(tmpdir(), 'opsync-cluster-'));
  const relay = join(root, 'relay');
  const key = encodeKeyFile(scopeKeyFromBytes('personal', randomBytes(32)));
  const started: Array<{ daemon: TestDaemon; stop(): Promise<void> }> = [];
  const stop = async () => {
    await Promise.all(started.map((each) => each.stop()));
    await rm(root, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < count; i++) started.push(await startOne(join(root, `device-${i}`), relay, key, options));
  } catch (error) {
    await stop();
    throw error;
  }
  return { relay, daemons: started.map((each) => each.daemon), stop };
}

async function startOne(
  dataDir: string,
  relay: string,
  key: string,
  options: ClusterOptions,
): Promise<{ daemon: TestDaemon; stop(): Promise<void> }> {
  await placeKey(dataDir, key);
  const child = spawn(process.execPath, startArgs(dataDir, relay, 'warn', options.args ?? []), { stdio: ['ignore', 'ignore', 'pipe'] });
  const clients: OpsyncClient[] = [];
  const stop = async () => {
    for (const client of clients) client.close();
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
    }
  };
  try {
    await ready(child, dataDir, options.readyTimeoutMs ?? 60_000);
  } catch (error) {
    await stop();
    throw error;
  }
  const info = JSON.parse(await readFile(join(dataDir, 'daemon.json'), 'utf8')) as { url: string; device_id: string };
  const daemon: TestDaemon = {
    dataDir,
    url: info.url,
    deviceId: info.device_id,
    client: async () => {
      const client = await fromDataDir(dataDir);
      clients.push(client);
      return client;
    },
    stop,
  };
  return { daemon, stop };
}

/** Puts the personal key file `key` in a data directory to be, as `opsync key import` would. */
export async function placeKey(dataDir: string, key: string): Promise<void> {
  await mkdir(join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
  await writeFile(join(dataDir, 'keys', 'personal.json'), key, { mode: 0o600 });
}

/** The arguments (after node) that start a daemon of `dataDir` on `relay`, on a loopback port the OS picks. */
export function startArgs(dataDir: string, relay: string, logLevel: string, extra: readonly string[]): string[] {
  return [CLI, 'start', '--data-dir', dataDir, '--relay', relay, '--listen', '127.0.0.1:0', '--log-level', logLevel, ...extra];
}

/** Resolves once `opsync wait` says the daemon of `dataDir` answers; rejects with its sentence, or the daemon's stderr when it died. */
async function ready(child: ChildProcess, dataDir: string, timeoutMs: number): Promise<void> {
  let stderr = '';
  createInterface({ input: child.stderr! }).on('line', (line) => (stderr += line + '\n'));
  const waiter = spawn(process.execPath, [CLI, 'wait', '--data-dir', dataDir, '--timeout-ms', String(timeoutMs)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let said = '';
  waiter.stderr.on('data', (chunk: Buffer) => (said += chunk.toString()));
  // `close`, not `exit`: by then the daemon's stderr has been read whole.
  const died = once(child, 'close').then(() => 'died' as const);
  const answered = once(waiter, 'exit').then(([code]) => (code === 0 ? ('ready' as const) : ('failed' as const)));
  const outcome = await Promise.race([died, answered]);
  if (outcome === 'ready') return;
  waiter.kill();
  const sentence = [...stderr.split('\n'), ...said.split('\n')].find((line) => line.startsWith('opsync: ')) ?? stderr.trim();
  throw new Error(`The daemon for ${dataDir} did not start: ${sentence.replace(/^opsync: /, '')}`);
}
