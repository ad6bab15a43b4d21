import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU time of another process, per thread, from /proc (Linux only), so that a throughput figure
 * can also say how much CPU each op cost and where: on two cores, what bounds a pipelined rate is
 * the CPU every process on the machine spends per op, not the wall time of one.
 */
export interface CpuSample {
  readonly pid: number;
  /** µs of user + system time per thread id (the main thread's id is the pid). */
  readonly threads: ReadonlyMap<number, number>;
}

export interface CpuPerOp {
  /** µs per op, every thread of the process. */
  readonly total: number;
  readonly main: number;
  /** The busiest thread other than the main one (the minting worker, for the daemon). */
  readonly busiestOther: number;
}

/** The process's CPU times now, or null where /proc cannot tell (another OS, a process gone). */
export function cpuSample(pid: number): CpuSample | null {
  try {
    const threads = new Map<number, number>();
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // Fields after the parenthesized command name: utime and stime are the 12th and 13th.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      threads.set(Number(tid), (Number(fields[11]) + Number(fields[12])) * tickMicros());
    }
    return { pid, threads };
  } catch {
    return null;
  }
}

/** CPU per op between two samples of one process (threads that ended meanwhile are not counted; threads started meanwhile count whole). */
export function cpuPerOp(before: CpuSample, after: CpuSample, ops: number): CpuPerOp {
  let total = 0;
  let busiestOther = 0;
  for (const [tid, micros] of after.threads) {
    const spent = micros - (before.threads.get(tid) ?? 0);
    total += spent;
    if (tid !== after.pid) busiestOther = Math.max(busiestOther, spent);
  }
  const main = (after.threads.get(after.pid) ?? 0) - (before.threads.get(after.pid) ?? 0);
  return { total: total / ops, main: main / ops, busiestOther: busiestOther / ops };
}

/** CPU of this process (every thread), in µs, for the client side of a figure. */
export function ownCpuMicros(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

let tick: number | undefined;

/** µs per clock tick, the unit of /proc's times (USER_HZ, 100 on every Linux we know of). */
function tickMicros(): number {
  if (tick === undefined) {
    let hz = 100;
    try {
      hz = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      // getconf missing: USER_HZ is 100 on Linux.
    }
    tick = 1_000_000 / hz;
  }
  return tick;
}
