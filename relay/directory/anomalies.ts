import { basename, relative } from 'node:path';
import { TEMP_PREFIX } from '../../src/platform/durable-fs.js';

/**
 * Files in a relay folder that are not what its layout names: editor leftovers, `*.sync-conflict-*`
 * copies of a synced folder, damaged files. Each is counted once, by kind, however often it is
 * seen; the counts are what `sync.status` reports as ignored relay files.
 */
export class Anomalies {
  private readonly kinds = new Map<string, string>();

  constructor(private readonly root: string) {}

  /** Records the file at `path` as anomalous of `kind`. */
  note(path: string, kind: string): void {
    this.kinds.set(relative(this.root, path), kind);
  }

  /** Records a file outside the layout: a conflict copy, or anything else; temporary files are not anomalies. */
  classify(path: string): void {
    const name = basename(path);
    if (name.startsWith(TEMP_PREFIX)) return;
    this.note(path, name.includes('sync-conflict') || name.includes('conflicted copy') ? 'conflict_copy' : 'not_layout');
  }

  counts(): Readonly<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const kind of this.kinds.values()) counts[kind] = (counts[kind] ?? 0) + 1;
    return counts;
  }
}
