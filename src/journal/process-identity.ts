import { readFile } from 'node:fs/promises';

/**
 * Which process wrote a lock or `daemon.json`, named so that another process cannot pass for
 * it. A pid alone does not do: after a reboot, or a long uptime, the pid belongs to some other
 * process, and a daemon killed -9 whose parent has not reaped it (a container without an init)
 * is a zombie that still answers kill(pid, 0). On Linux the name adds the boot id and the
 * process's start time (from /proc); elsewhere it is the pid.
 */
export interface ProcessIdentity {
  readonly pid: number;
  /** `<boot id>/<start time in clock ticks>`; absent where /proc is not available. */
  readonly started?: string;
}

/** This process's identity. */
export async function ownIdentity(): Promise<ProcessIdentity> {
  return (await identityOf(process.pid))!;
}

/** The identity of the process that holds `pid` now; null when none runs there. */
export async function identityOf(pid: number): Promise<ProcessIdentity | null> {
  if (!signalable(pid)) return null;
  const seen = await procState(pid);
  if (!seen) return { pid };
  return seen.state === 'Z' || seen.state === 'X' ? null : { pid, started: seen.started };
}

/**
 * Whether the process `identity` names still runs: its pid is alive, is not a zombie, and (when
 * both sides know it) started when the identity says.
 */
export async function stillRuns(identity: ProcessIdentity): Promise<boolean> {
  const now = await identityOf(identity.pid);
  // A live pid without a /proc entry: no /proc here, or it hides other users' processes.
  return now !== null && (identity.started === undefined || now.started === undefined || identity.started === now.started);
}

/** Reads a process identity from parsed JSON (a lock file, daemon.json); null when it is not one. */
export function parseIdentity(value: unknown): ProcessIdentity | null {
  if (typeof value !== 'object' || value === null) return null;
  const { pid, started } = value as { pid?: unknown; started?: unknown };
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return null;
  if (started !== undefined && typeof started !== 'string') return null;
  return started === undefined ? { pid } : { pid, started };
}

function signalable(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let bootId: Promise<string | null> | null = null;

/** The state letter and start of a process from /proc/<pid>/stat; null without one. */
async function procState(pid: number): Promise<{ state: string; started: string } | null> {
  bootId ??= readFile('/proc/sys/kernel/random/boot_id', 'utf8').then(
    (text) => text.trim(),
    () => null,
  );
  const boot = await bootId;
  if (boot === null) return null;
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) state ppid …": comm may hold spaces and parentheses, so fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const startTicks = fields[19];
  if (state === undefined || startTicks === undefined || !/^\d+$/.test(startTicks)) return null;
  return { state, started: `${boot}/${startTicks}` };
}
