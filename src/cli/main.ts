#!/usr/bin/env node
/**
 * The `opsync` command (proposals/daemon.md §CLI). Every failure ends in one sentence on stderr and a
 * non-zero exit: 1 for an error, 2 for a usage mistake (an unknown command or flag, a flag without
 * its value). Help names every command and flag (`commands.ts`).
 */
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
import { parseScope, scopeFromKey } from '../oplog/scope.js';
import { defaultDataDir, loadConfigFile, parseFlags, parseMs, parseStartArgs, type FlagSources } from '../daemon/config.js';
import { Daemon, VERSION } from '../daemon/daemon.js';
import { DataDir, type DaemonInfo, type StartProgressRecord } from '../daemon/data-dir.js';
import { STEP_NAMES } from '../daemon/start-progress.js';
import { stillRuns } from '../journal/process-identity.js';
import { RpcCallError, RpcClient } from '../rpc/rpc-client.js';
import { COMMANDS, commandHelp, findCommand, overview } from './commands.js';
import { renderStatus } from './render-status.js';

class UsageError extends Error {}

/** Where flags not given on the command line come from (`parseFlags`); set once the config file is read. */
let sources: FlagSources = { env: process.env, file: {} };

async function main(argv: string[]): Promise<number> {
  const { args, config } = withoutConfigFlag(argv);
  const [command, ...rest] = args;
  if (command === undefined) throw new UsageError('a command is required');
  if (command === '--version' || command === 'version') return print(VERSION);
  if (command === 'help' || command === '--help' || command === '-h') {
    if (rest.length === 0) return print(overview(VERSION));
    const spec = findCommand(rest);
    if (!spec) throw new UsageError(`there is no command ${JSON.stringify(rest.join(' '))}`);
    return print(commandHelp(spec));
  }
  const spec = findCommand(args);
  if (!spec && command === 'key') throw new UsageError('key takes export or import');
  if (!spec) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  if (rest.includes('--help') || rest.includes('-h')) return print(commandHelp(spec));
  // Read only for a command that takes flags: help and the version work whatever the file holds.
  const known = new Set(COMMANDS.flatMap((each) => Object.keys(each.flags)));
  sources = { env: process.env, file: await loadConfigFile(config, process.env, known) };
  switch (command) {
    case 'start':
      return start(rest);
    case 'call':
      return call(rest);
    case 'status':
      return status(rest);
    case 'wait':
      return wait(rest);
    case 'stop':
      return stop(rest);
    default:
      return key(rest);
  }
}

function print(text: string): number {
  console.log(text);
  return 0;
}

/** `--config FILE` (or `--config=FILE`) anywhere on the command line: the config file, for every command. */
function withoutConfigFlag(argv: readonly string[]): { args: string[]; config: string | undefined } {
  const args: string[] = [];
  let config: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--config') {
      config = argv[++i];
      if (!config) throw new UsageError('--config needs a FILE');
    } else if (arg.startsWith('--config=')) config = arg.slice('--config='.length);
    else args.push(arg);
  }
  return { args, config };
}

async function start(args: string[]): Promise<number> {
  // Listening for a stop before starting: one asked for while the daemon starts (a supervisor's
  // stop right after its start) is a clean stop once it has started, not the default kill.
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  const daemon = await Daemon.start(parseStartArgs(args, sources.env, sources.file));
  await stopped;
  await daemon.close();
  return 0;
}

async function call(args: string[]): Promise<number> {
  const { dataDir, positionals } = dataDirFlags(args, true);
  const [method, json] = positionals;
  if (!method || positionals.length > 2) throw new UsageError('call takes a METHOD and optionally one JSON argument');
  let params: unknown = {};
  if (json !== undefined) {
    try {
      params = JSON.parse(json);
    } catch {
      throw new UsageError(`the params ${JSON.stringify(json.slice(0, 60))} are not JSON`);
    }
  }
  return withClient(dataDir, async (client) => {
    try {
      console.log(JSON.stringify(await client.call(method, params as object), null, 2));
      return 0;
    } catch (error) {
      if (!(error instanceof RpcCallError)) throw error;
      console.error(JSON.stringify({ error: { code: error.code, message: error.message, data: error.data } }, null, 2));
      return 1;
    }
  });
}

/**
 * `opsync status`: the daemon's status once, or every `--interval-ms` with `--watch` (the screen
 * redrawn on a terminal; one JSON line per look with `--json`) until interrupted; `--web` prints
 * the status page's one-time link instead.
 */
async function status(args: string[]): Promise<number> {
  const flags = parseFlags(
    args,
    {
      'data-dir': { type: 'string' },
      json: { type: 'boolean' },
      watch: { type: 'boolean' },
      web: { type: 'boolean' },
      'interval-ms': { type: 'string' },
    },
    false,
    sources,
  );
  const intervalMs = parseMs(flags['interval-ms'], '--interval-ms', 2_000);
  return withClient(dataDirOf(flags), async (client) => {
    if (flags.web) {
      const link = await client.call<{ url: string }>('sync.status_link');
      console.log(`${link.url}\n(opens the status page once, in one browser, within two minutes)`);
      return 0;
    }
    const show = async () => {
      const answer = await client.call('sync.status');
      if (!flags.watch) console.log(flags.json ? JSON.stringify(answer, null, 2) : renderStatus(answer, Date.now()));
      else if (flags.json) console.log(JSON.stringify(answer));
      else process.stdout.write(`${process.stdout.isTTY ? '\x1b[2J\x1b[H' : '\n'}${renderStatus(answer, Date.now())}\n`);
    };
    await show();
    if (!flags.watch) return 0;
    const interrupted = new Promise<'stop'>((resolve) => process.once('SIGINT', () => resolve('stop')));
    for (;;) {
      const tick = new Promise<'tick'>((resolve) => setTimeout(() => resolve('tick'), intervalMs));
      if ((await Promise.race([interrupted, tick])) === 'stop') return 0;
      await show();
    }
  });
}

/**
 * Waits until the daemon of a data directory answers (for scripts that start one in the
 * background); fails at once, with the start's own sentence, when that start failed or died.
 */
async function wait(args: string[]): Promise<number> {
  const flags = parseFlags(args, { 'data-dir': { type: 'string' }, 'timeout-ms': { type: 'string' } }, false, sources);
  const dir = dataDirOf(flags);
  const began = Date.now();
  const deadline = began + parseMs(flags['timeout-ms'], '--timeout-ms', 30_000);
  let shown = '';
  for (;;) {
    // A damaged daemon.json may be the leftover of a crash: the starting daemon writes it anew.
    const info = await dir.readDaemonInfo().catch(() => null);
    if (info) {
      const token = await readFile(`${dir.root}/token`, 'utf8').catch(() => null);
      const client = token ? await RpcClient.connect(info.url, token.trim()).catch(() => null) : null;
      if (client) {
        await client.call('sync.hash_state');
        await client.close();
        return 0;
      }
    }
    const progress = await failedStart(dir, began);
    const line = progress ? progressLine(progress) : '';
    if (line !== shown && line !== '') console.error(`opsync: ${line}`);
    shown = line;
    if (Date.now() > deadline) throw new OpsyncError('relay_unavailable', `No daemon answered for ${dir.root} within the timeout.`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Slack for a start that failed just before `wait` began (a start and a wait launched together). */
const START_RECORD_SLACK_MS = 2_000;

/**
 * Throws the sentence of the newest start on `dir` when it failed, or died before it was ready,
 * since about when the wait began: an older record may be followed by a start still on its way.
 * Otherwise returns how far that start has come, when it says.
 */
async function failedStart(dir: DataDir, since: number): Promise<StartProgressRecord | null> {
  const start = await dir.readStart();
  const written = start && (await stat(dir.startPath).catch(() => null))?.mtimeMs;
  if (!start || written === null || written === undefined || written < since - START_RECORD_SLACK_MS) return null;
  if (start.state === 'failed') throw new OpsyncError('relay_unavailable', `The daemon's start failed: ${start.message}`);
  if (!(await stillRuns(start)) && (await dir.readDaemonInfo().catch(() => null)) === null)
    throw new OpsyncError(
      'relay_unavailable',
      `The daemon's start (pid ${start.pid}) ended before the daemon was ready; its log says why.`,
    );
  return start.state === 'starting' ? (start.progress ?? null) : null;
}

/** `reading the journal (bytes): 41943040 of 104857600 (40%)`. */
function progressLine({ step, done, total }: StartProgressRecord): string {
  return `${STEP_NAMES[step]}: ${done} of ${total} (${total > 0 ? Math.floor((100 * done) / total) : 100}%)`;
}

/** Stops the daemon of a data directory (SIGTERM) and waits until it has exited. */
async function stop(args: string[]): Promise<number> {
  const flags = parseFlags(args, { 'data-dir': { type: 'string' }, 'timeout-ms': { type: 'string' } }, false, sources);
  const dataDir = dataDirOf(flags);
  const timeoutMs = parseMs(flags['timeout-ms'], '--timeout-ms', 30_000);
  const info = await runningDaemon(dataDir);
  process.kill(info.pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (await stillRuns(info)) {
    if (Date.now() > deadline)
      throw new OpsyncError(
        'session_closed',
        `The daemon (pid ${info.pid}) has not exited ${timeoutMs} ms after SIGTERM; it may still be flushing, or stuck.`,
      );
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return 0;
}

async function key(args: string[]): Promise<number> {
  const [action, ...rest] = args;
  if (action === 'export') {
    const flags = parseFlags(rest, { 'data-dir': { type: 'string' }, scope: { type: 'string' } }, false, sources);
    const dir = dataDirOf(flags);
    const scope = scopeFromKey(flags.scope ?? 'personal');
    const text = await readFile(dir.keyPath(scope), 'utf8').catch(() => {
      throw new OpsyncError('key_missing', `${dir.root} holds no key for scope ${flags.scope ?? 'personal'}.`);
    });
    process.stdout.write(text);
    return 0;
  }
  if (action === 'import') {
    const { dataDir, positionals } = dataDirFlags(rest, true);
    if (positionals.length !== 1) throw new UsageError('key import takes one FILE');
    const text = await readFile(positionals[0]!, 'utf8').catch((error: NodeJS.ErrnoException) => {
      throw new OpsyncError(
        'key_invalid',
        `Cannot read the key file ${positionals[0]!}: ${error.code === 'ENOENT' ? 'there is no such file' : error.message}.`,
        { path: positionals[0]! },
      );
    });
    const running = await dataDir.readDaemonInfo();
    if (running && (await stillRuns(running)))
      return withClient(dataDir, async (client) => (console.log(JSON.stringify(await client.call('sync.import_key', { key: text }))), 0));
    const { parseKeyFile } = await import('../crypto/scope-key.js');
    const parsedKey = parseKeyFile(text, positionals[0]!);
    parseScope(parsedKey.scope);
    await (await DataDir.prepare(dataDir.root)).saveKey(parsedKey);
    console.log(JSON.stringify({ imported: true, kid: parsedKey.kid }));
    return 0;
  }
  throw new UsageError('key takes export or import');
}

/** The data directory `--data-dir` names, or the default one (nothing is created or changed). */
function dataDirOf(flags: { 'data-dir'?: string | undefined }): DataDir {
  return DataDir.existing(resolve(flags['data-dir'] ?? defaultDataDir(process.env)));
}

function dataDirFlags(args: string[], positionals = false): { dataDir: DataDir; positionals: string[] } {
  const flags = parseFlags(args, { 'data-dir': { type: 'string' } }, positionals, sources);
  if (!positionals && flags.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(flags.positionals[0])}`);
  return { dataDir: dataDirOf(flags), positionals: flags.positionals };
}

async function withClient(dataDir: DataDir, use: (client: RpcClient) => Promise<number>): Promise<number> {
  const info = await runningDaemon(dataDir);
  const token = (await readFile(`${dataDir.root}/token`, 'utf8')).trim();
  const client = await RpcClient.connect(info.url, token);
  try {
    return await use(client);
  } finally {
    await client.close();
  }
}

/**
 * The daemon that daemon.json names, once it is known to run: a daemon killed -9 leaves the file
 * behind, and its pid may since belong to another process, which must never be signalled.
 */
async function runningDaemon(dataDir: DataDir): Promise<DaemonInfo> {
  const info = await dataDir.readDaemonInfo();
  const start = `start one with: opsync start --data-dir ${dataDir.root}`;
  if (!info) throw new OpsyncError('relay_unavailable', `No daemon is running for ${dataDir.root}; ${start}`);
  if (!(await stillRuns(info))) {
    throw new OpsyncError(
      'relay_unavailable',
      `No daemon is running for ${dataDir.root}: the one that wrote ${dataDir.daemonInfoPath} (pid ${info.pid}) did not stop cleanly; ${start}`,
    );
  }
  return info;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError || (isOpsyncError(error) && (error.data as { usage?: boolean } | undefined)?.usage)) {
      console.error(`opsync: ${error.message}\n(opsync help lists the commands; opsync help COMMAND names its flags)`);
      process.exit(2);
    }
    console.error(`opsync: ${isOpsyncError(error) ? error.message : `unexpected failure: ${(error as Error).stack ?? String(error)}`}`);
    process.exit(1);
  },
);
