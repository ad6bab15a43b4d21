import { homedir } from 'node:os';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { isDeviceId, type DeviceId } from '../oplog/ids.js';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
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
  'max-skew-ms': { type: 'string' },
  'eviction-horizon-ms': { type: 'string' },
} as const;

export function parseStartArgs(argv: readonly string[], env: NodeJS.ProcessEnv): DaemonConfig {
  const values = parseFlags(argv, START_OPTIONS);
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
  const logLevel = values['log-level'] ?? env.OPSYNC_LOG_LEVEL ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) throw invalid(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
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
export function parseListen(text: string): Listen {
  if (text.includes('/')) {
    const socketPath = isAbsolute(text) ? text : resolve(text);
    const bytes = Buffer.byteLength(socketPath);
    if (bytes > MAX_SOCKET_PATH_BYTES)
      throw invalid(
        `--listen ${socketPath} is ${bytes} bytes long; a Unix socket path can be at most ${MAX_SOCKET_PATH_BYTES} (choose a shorter one)`,
      );
    return { socketPath };
  }
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : Number.NaN;
  if (!match || port > 65535)
    throw invalid(`--listen ${JSON.stringify(text)} is neither host:port (port 0 to 65535) nor a Unix socket path`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

/** `$XDG_DATA_HOME/opsync`, or `~/.local/share/opsync` when it is unset, empty or relative (the XDG spec says to ignore a relative one). */
export function defaultDataDir(env: NodeJS.ProcessEnv): string {
  const home = env.XDG_DATA_HOME && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(homedir(), '.local', 'share');
  return join(home, 'opsync');
}

/** Parses string flags strictly: an unknown flag or a missing value is one clear sentence. */
export function parseFlags<O extends Record<string, { type: 'string' }>>(argv: readonly string[], options: O, positionals = false) {
  try {
    const parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: positionals });
    // An empty value (an unset shell variable) would resolve to the current directory.
    const empty = Object.entries(parsed.values).find(([, value]) => value === '');
    if (empty) throw invalid(`--${empty[0]} needs a value, not an empty string`);
    return { ...(parsed.values as { [K in keyof O]?: string }), positionals: parsed.positionals };
  } catch (error) {
    if (isOpsyncError(error)) throw error;
    const { code, message } = error as NodeJS.ErrnoException;
    const name = /'(-[^' ]+)/.exec(message)?.[1] ?? '';
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw invalid(`${name} is not an option of this command (see opsync help)`);
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE')
      throw invalid(`${name} needs a value (a value that starts with "-" is read as a flag)`);
    throw invalid(message.split('.')[0]!);
  }
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
