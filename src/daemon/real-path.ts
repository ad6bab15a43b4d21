import { realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** The real path of `path`, or of its nearest existing folder with the rest appended (a folder not made yet). */
export function realOrNearest(path: string): string {
  const rest: string[] = [];
  for (let at = path; ; at = dirname(at)) {
    let real: string | null = null;
    try {
      real = realpathSync(at);
    } catch {
      real = null;
    }
    if (real !== null) return join(real, ...rest.reverse());
    if (dirname(at) === at) return path;
    rest.push(basename(at));
  }
}
