import { pino, type DestinationStream, type Logger } from 'pino';
import { isOpsyncError } from '../util/opsync-error.js';
import type { RecentLog } from './recent-log.js';

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every pino line carries, which the pretty format shows in its own place or not at all. */
const PLACED = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'component']);

/**
 * The daemon's log (proposals/daemon.md §Logs): pino, JSON by default and a line a person reads
 * with `pretty`. A named failure (`OpsyncError`: the relay out of reach, a refused op) is an
 * expected event, logged by its code, sentence and data; only an unexpected error keeps its
 * stack. Every warning and error also goes to `recent`, for the status page.
 */
export function daemonLogger(
  options: { level: string; format: 'json' | 'pretty' },
  recent: RecentLog,
  out: NodeJS.WritableStream = process.stdout,
): Logger {
  const destination: DestinationStream = options.format === 'pretty' ? { write: (line) => void out.write(prettyLine(line)) } : out;
  return pino(
    {
      level: options.level,
      serializers: {
        err: (error: unknown) =>
          isOpsyncError(error)
            ? { code: error.code, message: error.message, ...(error.data ? { data: error.data } : {}) }
            : pino.stdSerializers.err(error as Error),
      },
      hooks: {
        logMethod(args, method, level) {
          recent.note(args, level);
          method.apply(this, args);
        },
      },
    },
    destination,
  );
}

/** One JSON log line as `HH:MM:SS.mmm LEVEL component: message key=value …`; a line that is not JSON passes through. */
export function prettyLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString().slice(11, 23) : '';
  const level = (LEVEL_NAMES[entry.level as number] ?? String(entry.level)).padEnd(5);
  const component = typeof entry.component === 'string' ? `${entry.component}: ` : '';
  const fields = Object.entries(entry)
    .filter(([key]) => !PLACED.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
  return `${time} ${level} ${component}${typeof entry.msg === 'string' ? entry.msg : ''}${fields.length > 0 ? '  ' + fields.join(' ') : ''}\n`;
}
