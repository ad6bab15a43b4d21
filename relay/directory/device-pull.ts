import { basename } from 'node:path';
import type { DeviceId } from '../../src/oplog/ids.js';
import { truncatedAt } from '../port/relay-errors.js';
import type { PageBuilder } from '../port/relay-state.js';
import type { HeaderCheck, Truncated } from '../port/relay.js';
import type { FolderReads } from './folder-reads.js';
import { end, seqOfName } from './segment-folders.js';

/**
 * Reads `device`'s ops above `after` from its ops folder into `page`, in seq order (proposals/relay.md
 * §Pull): `read`, or `full` once the page is full. Where the device's chain cannot be read on — a hole, a damaged
 * or unreadable segment, first segments lost with no checkpoint covering them — the reader records
 * a stop in its damage report, for the writer to push those ops again. Collected history (a
 * checkpoint covers the device up to its floor) answers `Truncated`, for the reader to rebase.
 */
export async function pullDevice(
  reads: FolderReads,
  device: DeviceId,
  after: number,
  page: PageBuilder,
  authentic?: HeaderCheck,
): Promise<'read' | 'full' | Truncated> {
  const { names, segments, floor, unreadable } = await reads.folders.listing(device);
  // An empty folder names no floor. A chain restarted with nothing above its anchor yet starts
  // above the op a checkpoint covers: a reader behind that must rebase onto it.
  if (names.size === 0) {
    const covered = await reads.coveredUpTo(device, authentic);
    if (after < covered) return truncatedAt(device, after, covered + 1);
    return 'read';
  }
  if (end(segments.at(-1)) > after && after < floor - 1) {
    // Collected history: a checkpoint covers the device up to its floor, to rebase onto. Otherwise
    // the first files are lost (deleted, or left out of a backup): a stop for the writer to push
    // them again, as for any damage.
    if (await reads.covered(device, floor - 1, authentic)) return truncatedAt(device, after, floor);
    reads.damage.stop(device, after + 1);
    return 'read';
  }
  let seq = after;
  let stop: number | undefined;
  for (const segment of segments) {
    if (segment.firstSeq + segment.count - 1 <= seq) continue;
    if (segment.firstSeq > seq + 1) {
      stop = seq + 1;
      break;
    }
    const { header, ops, sizes } = await reads.folders.read(segment);
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.seq <= seq) continue;
      if (!page.add(op, sizes[i]!)) return 'full';
      seq = op.seq;
    }
    // Another file under a known name (its device restarted its chain on the relay): list again.
    if (header && header.count !== segment.count) {
      reads.folders.forgetFile(segment.path);
      reads.folders.forget(device);
      break;
    }
    if (ops.length < segment.count) {
      stop = seq + 1;
      break;
    }
  }
  // An unreadable segment file named above what could be read: the device's newest ops stand behind it.
  if (stop === undefined && seq >= floor - 1 && [...unreadable.keys()].some((path) => seqOfName(basename(path)) > seq)) stop = seq + 1;
  if (stop !== undefined) reads.damage.stop(device, stop);
  return 'read';
}
