import type { START_OPTIONS } from '../daemon/config.js';
import { envName } from '../daemon/config.js';

/** One flag of a command: its value's name and what it does. */
export interface FlagSpec {
  readonly value: string;
  readonly summary: string;
}

/** One `opsync` command, as help shows it (proposals/daemon.md §CLI). */
export interface CommandSpec {
  readonly name: string;
  /** What follows the flags: positional arguments. */
  readonly args?: string;
  readonly summary: string;
  readonly flags: Readonly<Record<string, FlagSpec>>;
}

const DATA_DIR: Record<string, FlagSpec> = {
  'data-dir': { value: 'DIR', summary: "this device's data directory (default: $XDG_DATA_HOME/opsync)" },
};
const TIMEOUT: Record<string, FlagSpec> = { 'timeout-ms': { value: 'MS', summary: 'how long to wait (default 30000)' } };

const START_FLAGS: Record<keyof typeof START_OPTIONS, FlagSpec> = {
  ...(DATA_DIR as { 'data-dir': FlagSpec }),
  relay: { value: 'DIR|postgres://URL', summary: 'the relay: a folder (default: DATA_DIR/relay) or a Postgres database' },
  listen: { value: 'HOST:PORT|SOCKET', summary: 'where the JSON-RPC server listens (default 127.0.0.1:7420; port 0: any free one)' },
  'allow-origin': { value: 'ORIGINS', summary: 'browser origins allowed to connect, comma-separated (default: none)' },
  'device-id': { value: 'ID', summary: "this device's id on first start (default: a random one)" },
  'lease-backend': {
    value: 'dir|postgres|memory',
    summary: 'where execution leases live (default: dir, or postgres with a Postgres relay)',
  },
  'lease-dir': { value: 'DIR', summary: "the lease folder (default: $XDG_STATE_HOME/opsync/leases/<relay's hash>)" },
  'pg-url': { value: 'URL', summary: 'the Postgres database for leases (default: the relay, when it is one)' },
  'passphrase-file': { value: 'FILE', summary: 'a file holding the passphrase that seals the scope keys at rest' },
  'log-level': { value: 'LEVEL', summary: 'fatal, error, warn, info (default), debug, trace or silent' },
  'log-format': { value: 'json|pretty', summary: 'log lines as JSON objects (default) or as text for people' },
  'metrics-listen': {
    value: 'HOST:PORT',
    summary: 'also serve /metrics, /healthz and /readyz here, without the token (default: only on --listen, behind it)',
  },
  'max-skew-ms': { value: 'MS', summary: "how far ahead of this device's clock a peer's op may be stamped (default 60000)" },
  'eviction-horizon-ms': { value: 'MS', summary: 'how long a silent device stays active (default 30 days)' },
};

export const COMMANDS: readonly CommandSpec[] = [
  { name: 'start', summary: 'Runs the daemon for a data directory until SIGINT or SIGTERM.', flags: START_FLAGS },
  {
    name: 'call',
    args: 'METHOD [JSON-PARAMS]',
    summary: 'Calls one JSON-RPC method of the running daemon and prints its result.',
    flags: DATA_DIR,
  },
  {
    name: 'status',
    summary: 'Prints what the running daemon knows: device, frontiers, peers, counts.',
    flags: {
      ...DATA_DIR,
      json: { value: '', summary: 'print sync.status as JSON (with --watch: one line per look)' },
      watch: { value: '', summary: 'look again every --interval-ms until interrupted' },
      'interval-ms': { value: 'MS', summary: 'how often --watch looks (default 2000)' },
      web: { value: '', summary: "print the status page's link, with a code that opens it once" },
    },
  },
  {
    name: 'wait',
    summary: 'Returns once the daemon of a data directory answers, showing how far its start has come (for scripts that start one).',
    flags: { ...DATA_DIR, ...TIMEOUT },
  },
  { name: 'stop', summary: 'Stops the running daemon (SIGTERM) and returns once it has exited.', flags: { ...DATA_DIR, ...TIMEOUT } },
  {
    name: 'key export',
    summary: "Prints a scope key file, to import on the user's other devices.",
    flags: { ...DATA_DIR, scope: { value: 'personal|org:NAME', summary: 'which key (default: personal)' } },
  },
  {
    name: 'key import',
    args: 'FILE',
    summary: 'Imports a scope key file (through the running daemon when there is one).',
    flags: DATA_DIR,
  },
  { name: 'help', args: '[COMMAND]', summary: "Shows this help, or one command's.", flags: {} },
  { name: 'version', summary: 'Prints the version (also --version).', flags: {} },
];

/** The help of one command: usage, what it does, and every flag with its environment variable. */
export function commandHelp(command: CommandSpec): string {
  const flags = Object.entries(command.flags);
  const usage = `usage: opsync ${command.name}${flags.length > 0 ? ' [flags]' : ''}${command.args ? ` ${command.args}` : ''}`;
  const width = Math.max(0, ...flags.map(([name, flag]) => flagText(name, flag).length));
  const lines = flags.map(([name, flag]) => {
    const env = flag.value ? `  (${envName(name)})` : '';
    return `  ${flagText(name, flag).padEnd(width)}  ${flag.summary}${env}`;
  });
  return [usage, '', command.summary, ...(lines.length > 0 ? ['', 'flags:', ...lines] : [])].join('\n');
}

/** The overview: every command with its summary, and how flags, environment and config file combine. */
export function overview(version: string): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return [
    `opsync ${version}: a multi-device sync daemon (JSON-RPC over WebSocket).`,
    '',
    'usage: opsync COMMAND [flags]',
    '',
    'commands:',
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    'Every flag can also be set in the environment (--data-dir as OPSYNC_DATA_DIR, and so on)',
    'or in a JSON config file (--config FILE, OPSYNC_CONFIG, or $XDG_CONFIG_HOME/opsync/config.json);',
    'a flag wins over the environment, which wins over the file. "opsync help COMMAND" names every flag.',
  ].join('\n');
}

/** The command `words` name (`key export` is two), or undefined. */
export function findCommand(words: readonly string[]): CommandSpec | undefined {
  return COMMANDS.find((command) => command.name === words.slice(0, command.name.split(' ').length).join(' '));
}

function flagText(name: string, flag: FlagSpec): string {
  return flag.value ? `--${name} ${flag.value}` : `--${name}`;
}
