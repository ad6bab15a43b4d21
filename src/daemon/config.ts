import { homedir } from 'node:os';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { isDeviceId, type DeviceId } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { readJsonObject } from '../platform/durable-fs.js';
import type { Listen } from '../rpc/rpc-server.js';
import { DEFAULT_SESSION_OPTIONS } from '../session/session.js';
import { realOrNearest } from './real-path.js';

/**
 * `opsync start` configuration (proposals/daemon.md §Start). Every value is untrusted: a bad one is refused with
 * one sentence naming the flag (`config_invalid`), before anything starts.
 */
export interface DaemonConfig {
  readonly dataDir: string;
  readonly relay: { readonly kind: 'dir'; readonly path: string } | { readonly kind: 'postgres'; readonly url: string };
  readonly listen: Listen;
  /** Browser origins allowed to connect (`--allow-origin`, comma-separated); none by default. */
  readonly allowOrigins: readonly string[];
  readonly deviceId: DeviceId | null;
  readonly leaseBackend: 'dir' | 'postgres' | 'memory';
  /** The directory lease store's folder; null: the default for the relay (src/daemon/lease-place.ts). */
  readonly leaseDir: string | null;
  readonly pgUrl: string | null;
  readonly passphraseFile: string | null;
  readonly logLevel: string;
  /** `json` (default, one object per line) or `pretty` (a line a person reads). */
  readonly logFormat: 'json' | 'pretty';
  /** Where `/metrics`, `/healthz` and `/readyz` are served without the token (`--metrics-listen`); null: on the daemon's port only. */
  readonly metricsListen: Listen | null;
  readonly maxSkewMs: number;
  readonly evictionHorizonMs: number;
}

/** 7420: unassigned by IANA, easy to remember; port 0 asks the OS for a free one. */
export const DEFAULT_PORT = 7420;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const START_OPTIONS = {
  'data-dir': { type: 'string' },
  relay: { type: 'string' },
  listen: { type: 'string' },
  'allow-origin': { type: 'string' },
  'device-id': { type: 'string' },
  'lease-backend': { type: 'string' },
  'lease-dir': { type: 'string' },
  'pg-url': { type: 'string' },
  'passphrase-file': { type: 'string' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  'metrics-listen': { type: 'string' },
  'max-skew-ms': { type: 'string' },
  'eviction-horizon-ms': { type: 'string' },
} as const;

export function parseStartArgs(argv: readonly string[], env: NodeJS.ProcessEnv, file: Readonly<Record<string, string>> = {}): DaemonConfig {
  const values = parseFlags(argv, START_OPTIONS, false, { env, file });
  const dataDir = resolve(values['data-dir'] ?? defaultDataDir(env));
  const relayArg = values.relay ?? join(dataDir, 'relay');
  const relay = /^postgres(ql)?:\/\//.test(relayArg)
    ? { kind: 'postgres' as const, url: relayArg }
    : { kind: 'dir' as const, path: resolve(relayArg) };
  if (relay.kind === 'dir') checkRelayPlace(relay.path, dataDir);
  const deviceId = values['device-id'] ?? null;
  if (deviceId !== null && !isDeviceId(deviceId)) {
    throw invalid(
      `--device-id ${JSON.stringify(deviceId)} is not a device id: use 1 to 64 characters of a-z, 0-9, "_" or "-", starting with a letter or digit`,
    );
  }
  const leaseBackend = values['lease-backend'] ?? (relay.kind === 'postgres' ? 'postgres' : 'dir');
  if (leaseBackend !== 'dir' && leaseBackend !== 'postgres' && leaseBackend !== 'memory') {
    throw invalid(`--lease-backend must be dir, postgres or memory, not ${JSON.stringify(leaseBackend)}`);
  }
  const pgUrl = values['pg-url'] ?? (relay.kind === 'postgres' ? relay.url : null);
  if (leaseBackend === 'postgres' && pgUrl === null) throw invalid('--lease-backend postgres needs --pg-url (or a postgres:// --relay)');
  const logLevel = values['log-level'] ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) throw invalid(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const logFormat = values['log-format'] ?? 'json';
  if (logFormat !== 'json' && logFormat !== 'pretty')
    throw invalid(`--log-format must be json or pretty, not ${JSON.stringify(logFormat)}`);
  return {
    dataDir,
    relay,
    listen: parseListen(values.listen ?? `127.0.0.1:${DEFAULT_PORT}`),
    allowOrigins: parseOrigins(values['allow-origin']),
    deviceId,
    leaseBackend,
    leaseDir: values['lease-dir'] ? resolve(values['lease-dir']) : null,
    pgUrl,
    passphraseFile: values['passphrase-file'] ? resolve(values['passphrase-file']) : null,
    logLevel,
    logFormat,
    metricsListen: values['metrics-listen'] === undefined ? null : parseListen(values['metrics-listen'], '--metrics-listen'),
    maxSkewMs: parseMs(values['max-skew-ms'], '--max-skew-ms', DEFAULT_SESSION_OPTIONS.maxSkewMs),
    evictionHorizonMs: parseMs(values['eviction-horizon-ms'], '--eviction-horizon-ms', 30 * 24 * 3_600_000),
  };
}

/**
 * The data directory holds this device's private keys and the relay folder is read by every
 * device (often synced between machines): neither may contain the other, except the default
 * `relay` folder inside the data directory, which the daemon keeps apart from its own files.
 */
function checkRelayPlace(relayArg: string, dataArg: string): void {
  // Compared as real paths: a symbolic link must not carry one into the other.
  const [relayPath, dataDir] = [realOrNearest(relayArg), realOrNearest(dataArg)];
  const inside = (path: string, folder: string) => path === folder || path.startsWith(folder + sep);
  if (inside(dataDir, relayPath)) {
    throw invalid(
      `the data directory ${dataDir} is inside the relay folder ${relayPath}: every device would read this device's private keys. Keep them apart`,
    );
  }
  if (inside(relayPath, dataDir) && relayPath !== join(dataDir, 'relay')) {
    throw invalid(
      `the relay folder ${relayPath} is inside the data directory ${dataDir}; use ${join(dataDir, 'relay')} (the default) or a folder outside it`,
    );
  }
}

/**
 * `--allow-origin`: comma-separated origins (`scheme://host[:port]`, as a browser sends them in
 * `Origin`). A page from any other origin is refused, so a web page the user happens to visit
 * cannot drive the daemon even if it learned the token.
 */
export function parseOrigins(text: string | undefined): string[] {
  if (text === undefined) return [];
  return text.split(',').map((origin) => {
    const trimmed = origin.trim();
    let parsed: URL | null = null;
    try {
      parsed = new URL(trimmed);
    } catch {
      parsed = null;
    }
    if (!parsed || parsed.origin !== trimmed)
      throw invalid(
        `--allow-origin ${JSON.stringify(trimmed)} is not an origin: give scheme://host[:port], with no path or trailing slash`,
      );
    return trimmed;
  });
}

/** Bytes of a Unix socket path the kernel keeps (sun_path, 108 on Linux, with its NUL); it cuts longer ones silently. */
const MAX_SOCKET_PATH_BYTES = 107;

/** `host:port` (IPv6 in brackets; port 0 allowed), or a Unix socket path (anything with a `/`). */
export function parseListen(text: string, flag = '--listen'): Listen {
  if (text.includes('/')) {
    const socketPath = isAbsolute(text) ? text : resolve(text);
    const bytes = Buffer.byteLength(socketPath);
    if (bytes > MAX_SOCKET_PATH_BYTES)
      throw invalid(
        `${flag} ${socketPath} is ${bytes} bytes long; a Unix socket path can be at most ${MAX_SOCKET_PATH_BYTES} (choose a shorter one)`,
      );
    return { socketPath };
  }
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : Number.NaN;
  if (!match || port > 65535)
    throw invalid(`${flag} ${JSON.stringify(text)} is neither host:port (port 0 to 65535) nor a Unix socket path`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

/** `$XDG_DATA_HOME/opsync`, or `~/.local/share/opsync` when it is unset, empty or relative (the XDG spec says to ignore a relative one). */
export function defaultDataDir(env: NodeJS.ProcessEnv): string {
  const home = env.XDG_DATA_HOME && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share');
  return join(home, 'opsync');
}

/** Where a flag not given on the command line is looked up: the environment, then the config file. */
export interface FlagSources {
  readonly env: NodeJS.ProcessEnv;
  /** The config file's values by flag name (`loadConfigFile`). */
  readonly file: Readonly<Record<string, string>>;
}

/** A flag's environment variable: `--data-dir` is `OPSYNC_DATA_DIR`. */
export function envName(flag: string): string {
  return `OPSYNC_${flag.toUpperCase().replace(/-/g, '_')}`;
}

type FlagOptions = Record<string, { type: 'string' | 'boolean' }>;
type FlagValues<O extends FlagOptions> = { [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string };

/**
 * Parses flags strictly: an unknown flag or a missing value is one clear sentence, marked as a
 * usage mistake (`data.usage`, exit 2). A string flag not given is taken from `sources`: the
 * environment (`envName`), then the config file — a flag wins over both (proposals/daemon.md §CLI).
 */
export function parseFlags<O extends FlagOptions>(argv: readonly string[], options: O, positionals = false, sources?: FlagSources) {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: positionals });
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    const name = /'(-[^' ]+)/.exec(message)?.[1] ?? '';
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw usage(`${name} is not an option of this command (see opsync help)`);
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE')
      throw usage(`${name} needs a value (a value that starts with "-" is read as a flag)`);
    throw usage(message.split('.')[0]!);
  }
  const values: Record<string, string | boolean | undefined> = { ...parsed.values };
  // An empty value (an unset shell variable) would resolve to the current directory.
  const empty = Object.entries(values).find(([, value]) => value === '');
  if (empty) throw invalid(`--${empty[0]} needs a value, not an empty string`);
  for (const [flag, { type }] of Object.entries(options)) {
    if (values[flag] !== undefined || type !== 'string' || !sources) continue;
    // An empty environment variable counts as unset, as shells unset one by emptying it.
    values[flag] = sources.env[envName(flag)] || sources.file[flag];
  }
  return { ...(values as FlagValues<O>), positionals: parsed.positionals };
}

/**
 * The config file's flag values (proposals/daemon.md §CLI): `path`, else `$OPSYNC_CONFIG`, else
 * `$XDG_CONFIG_HOME/opsync/config.json` when it exists. A JSON object of flag names to strings or
 * numbers, read as untrusted input: a regular file of at most 1 MiB, every key a flag some command
 * takes (`known`), or one sentence naming what is wrong.
 */
export async function loadConfigFile(
  path: string | undefined,
  env: NodeJS.ProcessEnv,
  known: ReadonlySet<string>,
): Promise<Record<string, string>> {
  const explicit = path ?? (env.OPSYNC_CONFIG || undefined);
  const configHome = env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  const file = resolve(explicit ?? join(configHome, 'opsync', 'config.json'));
  const value = await readJsonObject(file);
  if (value === undefined) {
    if (explicit !== undefined) throw invalid(`the config file ${file} does not exist`);
    return {};
  }
  if (value === null)
    throw invalid(
      `the config file ${file} is not a JSON object of flag names to values in a regular file of at most 1 MiB (a symbolic link is not followed: name the file it points to)`,
    );
  const values: Record<string, string> = {};
  for (const [key, raw] of Object.entries(value)) {
    if (!known.has(key))
      throw invalid(`the config file ${file} names ${JSON.stringify(key.slice(0, 64))}, which is no flag of opsync (see opsync help)`);
    if (typeof raw !== 'string' && !(typeof raw === 'number' && Number.isFinite(raw)))
      throw invalid(`the config file ${file} gives ${key} a value that is neither a string nor a number`);
    values[key] = String(raw);
  }
  return values;
}

export function parseMs(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value <= 0) throw invalid(`${flag} must be a positive whole number of milliseconds`);
  return value;
}

function invalid(sentence: string): OpsyncError {
  return new OpsyncError('config_invalid', `${sentence}.`);
}

/** A usage mistake (an unknown flag, a flag without its value): the CLI exits 2. */
function usage(sentence: string): OpsyncError {
  return new OpsyncError('config_invalid', `${sentence}.`, { usage: true });
}
