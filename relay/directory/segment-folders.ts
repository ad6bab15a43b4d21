import { lstat, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { DeviceId } from '../../src/oplog/ids.js';
import { headOf, type ChainHead, type OpRecord } from '../../src/oplog/op-record.js';
import type { CoreCrypto } from '../../src/oplog/core-crypto.js';
import type { Anomalies } from './anomalies.js';
import { firstLine } from '../port/checkpoint-files.js';
import { fileIdentity, notRegular, readTextAtMost } from '../../src/platform/durable-fs.js';
import { isOwnSigned } from '../port/push-rules.js';
import { notRegistered } from '../port/relay-errors.js';
import {
  decodeHeader,
  decodeSegment,
  MAX_SEGMENT_BYTES,
  SEGMENT_NAME,
  segmentName,
  type DecodedSegment,
  type SegmentHeader,
} from './segment-codec.js';

export interface Segment extends SegmentHeader {
  readonly device: DeviceId;
  readonly path: string;
}

/** A device's ops folder as last listed. */
export interface Listing {
  readonly names: Set<string>;
  /** The valid segments, in seq order. */
  readonly segments: Segment[];
  /**
   * The lowest seq a segment file is named for, valid or damaged: below it GC collected the ops.
   * A damaged segment is not a collected one — a reader stops before it instead of rebasing.
   */
  readonly floor: number;
  /** Segment files whose header could not be read, with the identity they had: read again once replaced. */
  readonly unreadable: ReadonlyMap<string, string>;
  /** The folder's modification and change times when listed: a file deleted and written again under its name changes them, not the names. */
  readonly stamp: string;
  /** The last segment file's identity when listed: written again (a restored tail), it is a new file. */
  readonly tail: string;
}

/**
 * The devices' ops folders of a directory relay (`devices/<id>/ops/<first seq>.jsonl`), as this
 * handle last listed them. A segment file is written once, so a header is read once per path and
 * a listing is rebuilt only when its folder gained or lost a file, an unreadable file was
 * replaced, or the folder changed with the same names (a file deleted and written again under its
 * name, which a writer pushing again what the relay lost does). This device's own folder is
 * listed once: only this handle writes it, and it records its own writes here.
 */
export class SegmentFolders {
  private readonly headers = new Map<string, SegmentHeader | string>();
  private readonly listings = new Map<DeviceId, Listing>();
  /** This device's newest op in its folder, once read (only this handle writes it). */
  private head: ChainHead | null | undefined = undefined;

  constructor(
    private readonly devicesDir: string,
    private readonly self: DeviceId,
    private readonly anomalies: Anomalies,
    private readonly crypto: CoreCrypto,
    /** This device's registered key, which its own ops must verify under (null until it registered). */
    private readonly ownKey: () => string | null,
  ) {}

  opsDir(device: DeviceId): string {
    return join(this.devicesDir, device, 'ops');
  }

  async segments(device: DeviceId): Promise<Segment[]> {
    return (await this.listing(device)).segments;
  }

  /** Reads the headers of the files `names` in the device's ops folder: valid segments join `segments`, others are classified. */
  private async readHeaders(
    device: DeviceId,
    names: readonly string[],
    segments: Segment[],
    unreadable: Map<string, string>,
  ): Promise<void> {
    const dir = this.opsDir(device);
    for (const name of names) {
      const path = join(dir, name);
      const match = SEGMENT_NAME.exec(name);
      if (!match) {
        this.anomalies.classify(path);
        continue;
      }
      const header = await this.segmentHeader(path, device, Number(match[1]));
      if (typeof header !== 'string') {
        segments.push({ ...header, device, path });
        continue;
      }
      // A file gone since the folder was read (collected, or removed and about to be written
      // again) is not damage to count, but is read again once it is there.
      if (header !== GONE) this.anomalies.note(path, header);
      unreadable.set(path, await fileIdentity(path));
    }
  }

  /**
   * The device's ops folder: its valid segments in seq order and its floor; everything else in it
   * is classified. This device's own listing is kept by this handle's writes, unless `reread`
   * asks to look at the folder again (restored from an older backup, it holds fewer segments).
   */
  async listing(device: DeviceId, reread = false): Promise<Listing> {
    const cached = this.listings.get(device);
    if (cached && device === this.self && !reread) return cached;
    const dir = this.opsDir(device);
    // Taken before the names: a change after it shows at the next listing.
    const stamp = await folderStamp(dir);
    // A device folder or ops folder that is a link leads outside the relay: nothing is read through it.
    if (stamp === LINKED) {
      this.anomalies.note(dir, 'not_regular');
      const empty: Listing = { names: new Set(), segments: [], floor: 0, unreadable: new Map(), stamp, tail: '' };
      this.listings.set(device, empty);
      return empty;
    }
    const names = await readdir(dir).catch((error: NodeJS.ErrnoException) => {
      // Its own folder is read again to learn what the relay still holds: a failed read is not "nothing".
      if (reread && error.code !== 'ENOENT') throw error;
      return [];
    });
    const fresh = cached ? names.filter((name) => !cached.names.has(name)) : names;
    const replaced = cached !== undefined && (await this.replaced(cached.unreadable));
    let removed = replaced || (cached !== undefined && names.length - fresh.length !== cached.names.size);
    if (cached && !removed && fresh.length === 0) {
      // This handle writes its own folder, and records its writes here. A folder's times change
      // at the kernel's clock tick, so a tail written again within the tick the folder was read
      // shows only in the tail file's own identity (a new inode).
      if (device === this.self || (stamp === cached.stamp && (await tailIdentity(cached.segments)) === cached.tail)) return cached;
      // The same names in a folder that changed: a file was deleted and written again under its
      // name (a writer pushing again what the relay lost, in another cut). Headers are read afresh.
      for (const name of names) this.headers.delete(join(dir, name));
      removed = true;
    }
    const segments: Segment[] = removed || !cached ? [] : [...cached.segments];
    const unreadable = new Map(removed || !cached ? [] : cached.unreadable);
    const toRead = removed ? names : [...fresh];
    if (cached && !removed && stamp !== cached.stamp && device !== this.self) {
      // New names in a folder that changed: its last segment may also have been written again,
      // longer, under its name (a writer restoring its damaged tail along with newer ops); with
      // the count kept from before, a reader at its old end would skip it for good.
      const last = segments.pop();
      if (last) {
        this.headers.delete(last.path);
        toRead.push(basename(last.path));
      }
    }
    await this.readHeaders(device, toRead, segments, unreadable);
    segments.sort((a, b) => a.firstSeq - b.firstSeq);
    await this.reheadBeforeGaps(segments);
    const floor = names.map(seqOfName).reduce((lowest, seq) => (seq >= 0 ? Math.min(lowest, seq) : lowest), Infinity);
    const listing = {
      names: new Set(names),
      segments,
      floor: Number.isFinite(floor) ? floor : 0,
      unreadable,
      stamp,
      tail: await tailIdentity(segments),
    };
    this.listings.set(device, listing);
    // A file this handle did not write appeared in its own folder: its head is verified again.
    if (device === this.self && (removed || fresh.length > 0)) this.head = undefined;
    return listing;
  }

  read(segment: Segment): Promise<DecodedSegment> {
    return this.readFile(segment.path, segment.firstSeq, segment.device);
  }

  /** The segment file at `path`: its valid ops, and its problem (counted) if any. */
  async readFile(path: string, firstSeq: number, device = this.self): Promise<DecodedSegment> {
    let text: string | null;
    try {
      text = await readTextAtMost(path, MAX_SEGMENT_BYTES);
    } catch {
      // Gone (collected while this read it) or unreadable: nothing to serve, nothing to count.
      return { header: null, ops: [], sizes: [], problem: 'segment_corrupt' };
    }
    const decoded: DecodedSegment =
      text === null ? { header: null, ops: [], sizes: [], problem: 'segment_corrupt' } : decodeSegment(text, device, firstSeq);
    if (decoded.problem) this.anomalies.note(path, decoded.problem);
    return decoded;
  }

  /** This device's held op at `seq`, if a segment holds it readable. */
  async heldOp(seq: number): Promise<OpRecord | undefined> {
    const segment = (await this.segments(this.self)).findLast((s) => s.firstSeq <= seq);
    return segment ? (await this.read(segment)).ops.find((op) => op.seq === seq) : undefined;
  }

  /**
   * This device's newest op on the relay that its own key signed: read once, then kept by this
   * handle's writes. Segments above it that hold no op it signed were written by someone else
   * (`segment_unsigned`): they are left out of its listing, so that no head, clone check or push
   * plan rests on them.
   */
  async ownHead(): Promise<ChainHead | null> {
    if (this.head !== undefined) return this.head;
    const publicKey = this.ownKey();
    if (publicKey === null) throw notRegistered(this.self);
    const listing = await this.listing(this.self);
    this.head = null;
    while (listing.segments.length > 0) {
      const newest = listing.segments.at(-1)!;
      const op = (await this.read(newest)).ops.findLast((candidate) => isOwnSigned(this.self, candidate, publicKey, this.crypto));
      if (op) {
        this.head = headOf(op);
        break;
      }
      this.anomalies.note(newest.path, 'segment_unsigned');
      listing.segments.pop();
    }
    return this.head;
  }

  /** Whether the file at `path` holds ops this device signed (a push never replaces those). */
  async ownSigned(path: string, firstSeq: number): Promise<boolean> {
    const publicKey = this.ownKey();
    const { ops, problem } = await this.readFile(path, firstSeq);
    return problem === null && publicKey !== null && ops.some((op) => isOwnSigned(this.self, op, publicKey, this.crypto));
  }

  /** The head `ownHead` read or a write set; undefined while not read yet. */
  knownHead(): ChainHead | null | undefined {
    return this.head;
  }

  /** Records a segment this handle wrote at the top of its own folder. */
  appended(path: string, run: readonly OpRecord[]): void {
    this.headers.delete(path);
    this.head = headOf(run.at(-1)!);
    const own = this.listings.get(this.self);
    if (own) {
      own.names.add(segmentName(run[0]!.seq));
      own.segments.push({ firstSeq: run[0]!.seq, count: run.length, device: this.self, path });
    }
  }

  /** Forgets what was read of the file at `path` (rewritten or removed by this handle). */
  forgetFile(path: string): void {
    this.headers.delete(path);
  }

  /** Lists the device's folder afresh next time. */
  forget(device: DeviceId): void {
    this.listings.delete(device);
  }

  /** This device's folder changed under this handle: its listing and head are read afresh next time. */
  forgetOwn(): void {
    this.listings.delete(this.self);
    this.head = undefined;
  }

  /** This device's chain starts over on the relay: its folder holds no segment now. */
  restarted(): void {
    this.listings.delete(this.self);
    this.head = null;
  }

  /**
   * A segment followed by a gap is read again: a file deleted and written again, longer, under
   * its name (a writer pushing again, in another cut, what the relay lost) keeps its name, and
   * the header kept from before would put a gap where there is none — a reader stopped there for
   * good, since the writer finds that range intact. Gaps are rare (damage), so is this read.
   */
  private async reheadBeforeGaps(segments: Segment[]): Promise<void> {
    for (let i = 0; i + 1 < segments.length; i++) {
      const segment = segments[i]!;
      if (end(segment) + 1 >= segments[i + 1]!.firstSeq) continue;
      this.headers.delete(segment.path);
      const header = await this.segmentHeader(segment.path, segment.device, segment.firstSeq);
      if (typeof header !== 'string') segments[i] = { ...header, device: segment.device, path: segment.path };
    }
  }

  /** Whether a segment file whose header could not be read was replaced or removed since; forgets the headers of those that were. */
  private async replaced(unreadable: ReadonlyMap<string, string>): Promise<boolean> {
    let any = false;
    for (const [path, was] of unreadable) {
      if ((await fileIdentity(path)) === was) continue;
      this.headers.delete(path);
      any = true;
    }
    return any;
  }

  /**
   * A segment file's header, or its problem: a link, folder or FIFO at a segment's name is
   * `not_regular` damage of that one file, never a failure of the listing. GONE when the file
   * vanished since the folder was listed (not kept: it is read again when it is back).
   */
  private async segmentHeader(path: string, device: DeviceId, firstSeq: number): Promise<SegmentHeader | string> {
    let header = this.headers.get(path);
    if (header === undefined) {
      try {
        header = decodeHeader(await firstLine(path), device, firstSeq);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return GONE;
        header = notRegular(error) ? 'not_regular' : 'segment_corrupt';
      }
      this.headers.set(path, header);
    }
    return header;
  }
}

/** The identity of the last of `segments`' files ('' for none). */
function tailIdentity(segments: readonly Segment[]): Promise<string> {
  const last = segments.at(-1);
  return last ? fileIdentity(last.path) : Promise.resolve('');
}

/** A segment file that vanished between the listing and the read of its header. */
const GONE = 'gone';

/** The stamp of an ops folder that is, or sits in, a symbolic link rather than a folder. */
const LINKED = 'linked';

/** A folder's modification and change times ("" when it cannot be read; LINKED when it or its device folder is a link). */
async function folderStamp(dir: string): Promise<string> {
  const parent = await lstat(dirname(dir)).catch(() => null);
  const info = await lstat(dir).catch(() => null);
  if (parent?.isSymbolicLink() || info?.isSymbolicLink()) return LINKED;
  return info ? `${info.mtimeMs}:${info.ctimeMs}` : '';
}

/** The first seq a segment file's name gives, -1 when it is not a segment name. */
export function seqOfName(name: string): number {
  return Number(SEGMENT_NAME.exec(name)?.[1] ?? -1);
}

/** The last seq a segment holds, -1 for none. */
export function end(segment: SegmentHeader | undefined): number {
  return segment ? segment.firstSeq + segment.count - 1 : -1;
}
