import { readdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { CoreCrypto } from '../../src/oplog/core-crypto.js';
import { verifyChain } from '../../src/oplog/chain.js';
import type { SeqFrontier } from '../../src/oplog/frontier.js';
import type { DeviceId, OpId } from '../../src/oplog/ids.js';
import { headOf, opIdHolds, type OpRecord } from '../../src/oplog/op-record.js';
import { encodeDamageReport, NO_DAMAGE, type DamageReport } from './damage-report.js';
import { fileIdentity, MAX_JSON_FILE_BYTES, readTextAtMost, writeFileAtomic, writeFileDurable } from '../../src/platform/durable-fs.js';
import { anchorFor, checkRestore } from '../port/push-rules.js';
import { notRegistered } from '../port/relay-errors.js';
import type { HeaderCheck, Repairs, SeqRange } from '../port/relay.js';
import { encodeSegment, segmentName, segmentRuns } from './segment-codec.js';
import { end, seqOfName, type Segment, type SegmentFolders } from './segment-folders.js';

/**
 * Damage repair in the directory relay (proposals/relay.md §Damaged segments, §Damaged
 * checkpoints), with one writer per file: a reader says what stops it in its own
 * `damage.json` (`ReaderDamage`); the writer of the damaged ops reads every report, checks its
 * own copy, and writes again from its journal what is damaged there too (`WriterRepair`).
 */

/**
 * What stops this device, reading: per device, the first seq it cannot get past (a damaged or
 * missing segment found by a pull, or an op that failed verification), and the checkpoints it
 * could not open. A stop stands until this device acks past it; a checkpoint report until the
 * checkpoint's file changes.
 */
export class ReaderDamage {
  private readonly stopped = new Map<DeviceId, number>();
  /** Checkpoints found damaged, with their file's identity then. */
  private readonly checkpoints = new Map<string, string>();
  /** The report as last written (null until read from the file). */
  private written: string | null = null;

  constructor(
    private readonly reportPath: string,
    private readonly checkpointPath: (hash: string) => string,
    /** Checks the folder the report goes into before it is written (never through a planted link). */
    private readonly beforeWrite: () => Promise<void>,
  ) {}

  stop(device: DeviceId, seq: number): void {
    this.stopped.set(device, seq);
  }

  async checkpointDamaged(hash: string): Promise<void> {
    this.checkpoints.set(hash, await fileIdentity(this.checkpointPath(hash)));
  }

  /** Drops the stops this device acked past. */
  acked(frontier: SeqFrontier): void {
    for (const [device, seq] of this.stopped) if ((frontier.get(device) ?? -1) >= seq) this.stopped.delete(device);
  }

  /** Writes the report when what stops this reader changed (its own folder: one writer). */
  async write(): Promise<void> {
    // A checkpoint file that changed since it was reported (restored, or collected) is read afresh.
    for (const [hash, was] of this.checkpoints) if ((await fileIdentity(this.checkpointPath(hash))) !== was) this.checkpoints.delete(hash);
    const text = encodeDamageReport({ stopped: this.stopped, checkpoints: [...this.checkpoints.keys()] });
    // A report left by an earlier run may still name stops that are gone.
    this.written ??= (await readTextAtMost(this.reportPath, MAX_JSON_FILE_BYTES).catch(() => null)) ?? NO_DAMAGE;
    if (text === this.written) return;
    await this.beforeWrite();
    try {
      await writeFileAtomic(this.reportPath, text);
    } catch (error) {
      // Not registered yet (no folder of its own): there is nobody to report for.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    this.written = text;
  }
}

/**
 * The writer's side: this device's ranges that readers report they cannot read and that are
 * damaged or missing here too. A reader whose own copy is damaged (a synced folder) is not
 * answered by rewriting an intact file. The first refresh also checks this device's newest
 * segment: a push takes its head from it, so it is restored before anything.
 */
export class WriterRepair {
  private damaged: readonly SeqRange[] = [];
  private checkpoints: readonly string[] = [];
  /** Whether a report may have changed since the last refresh (always, without a watcher). */
  private changed = true;
  private newestChecked = false;
  /** This device's segments found intact when a reader reported them, by path, with the file identity then. */
  private readonly intact = new Map<string, string>();

  constructor(
    private readonly self: DeviceId,
    private readonly crypto: CoreCrypto,
    private readonly folders: SegmentFolders,
    private readonly publicKey: () => Promise<string | null>,
    /** Whether a checkpoint on the relay covers this device up to `seq` (its ops up to there may be collected). */
    private readonly covered: (seq: number, authentic?: HeaderCheck) => Promise<boolean>,
  ) {}

  /** A reader's report changed (its file was seen by the watcher). */
  reportsChanged(): void {
    this.changed = true;
  }

  /** What `refresh` found last. */
  repairs(): Repairs {
    return { ops: this.damaged, checkpoints: this.checkpoints };
  }

  /** Whether the answer must be read again: always without a watcher, else when a report changed. */
  stale(watching: boolean): boolean {
    return !watching || this.changed || !this.newestChecked;
  }

  /** Reads the readers' reports (`reports`), and checks this device's newest segment once. */
  async refresh(reports: () => Promise<DamageReport[]>, authentic?: HeaderCheck): Promise<void> {
    this.changed = false;
    const reported = new Set<number>();
    if (!this.newestChecked) {
      const newest = (await this.folders.segments(this.self)).at(-1);
      if (newest && !(await this.verifies(newest))) reported.add(newest.firstSeq);
      // Known now, while it reads whole: damage to it later cannot mislead a push.
      else await this.folders.ownHead();
      this.newestChecked = true;
    }
    const checkpoints = new Set<string>();
    for (const report of await reports()) {
      const seq = report.stopped.get(this.self);
      if (seq !== undefined) reported.add(seq);
      for (const hash of report.checkpoints) checkpoints.add(hash);
    }
    this.checkpoints = [...checkpoints].sort();
    if (reported.size === 0) {
      this.damaged = [];
      return;
    }
    // Listed afresh: a damaged file may have been removed by hand since this handle listed it.
    this.folders.forget(this.self);
    const { segments, floor } = await this.folders.listing(this.self);
    const head = this.folders.knownHead()?.seq ?? end(segments.at(-1));
    const ranges: SeqRange[] = [];
    const sorted = [...reported].sort((a, b) => a - b);
    // Readers stopped below a floor no checkpoint covers (the first files lost, not collected):
    // one range, from the lowest stop. Below a covered floor, readers rebase.
    if (sorted[0]! < floor && floor > 0 && !(await this.covered(floor - 1, authentic))) ranges.push({ first: sorted[0]!, last: floor - 1 });
    for (const seq of sorted.filter((seq) => seq >= floor)) {
      const range = seq > head ? null : await this.unreadableRange(seq, segments, floor, head);
      if (range && !ranges.some((r) => r.first === range.first)) ranges.push(range);
    }
    this.damaged = ranges;
  }

  /** This device's chain starts over on the relay: nothing of the old one is to be repaired. */
  restarted(): void {
    this.newestChecked = true;
    this.damaged = [];
  }

  /**
   * Writes again each damaged range that `ops` offer in full, after checking that they continue
   * the held ops on both sides. Returns whether any was.
   */
  async restore(ops: readonly OpRecord[]): Promise<boolean> {
    if (this.damaged.length === 0) return false;
    const publicKey = await this.publicKey();
    if (publicKey === null) throw notRegistered(this.self);
    const dir = this.folders.opsDir(this.self);
    const left: SeqRange[] = [];
    for (const range of this.damaged) {
      const run = ops.filter((op) => op.seq >= range.first && op.seq <= range.last);
      if (run.length === 0) {
        left.push(range);
        continue;
      }
      const segments = await this.folders.segments(this.self);
      const held = new Map<number, OpId>();
      for (const segment of segments.filter((s) => s.firstSeq <= range.last && end(s) >= range.first)) {
        for (const op of (await this.folders.read(segment)).ops) if (opIdHolds(op, this.crypto)) held.set(op.seq, op.op_id);
      }
      const before = await this.authenticOp(range.first - 1);
      const after = await this.authenticOp(range.last + 1);
      checkRestore(
        { self: this.self, publicKey, range, before: before && headOf(before), afterPrev: after?.prev ?? undefined, held },
        run,
        this.crypto,
      );
      const written = new Set<string>();
      for (const part of segmentRuns(run)) {
        const name = segmentName(part[0]!.seq);
        await writeFileDurable(join(dir, name), encodeSegment(this.self, part));
        written.add(name);
        this.folders.forgetFile(join(dir, name));
      }
      // An unreadable file named inside the range would stand beside the restored segments.
      const valid = new Set(segments.map((s) => basename(s.path)));
      for (const name of await readdir(dir)) {
        const first = seqOfName(name);
        if (first >= range.first && first <= range.last && !written.has(name) && !valid.has(name))
          await rm(join(dir, name), { force: true });
      }
      this.folders.forget(this.self);
    }
    const restored = left.length < this.damaged.length;
    this.damaged = left;
    return restored;
  }

  /**
   * The range around `seq` this device's folder cannot serve: a segment that does not read in
   * full, or the gap an unreadable or missing file leaves between readable ones; null when
   * `seq` reads fine here.
   */
  private async unreadableRange(seq: number, segments: readonly Segment[], floor: number, head: number): Promise<SeqRange | null> {
    const covering = segments.find((s) => s.firstSeq <= seq && seq <= end(s));
    if (covering) return (await this.verifies(covering)) ? null : { first: covering.firstSeq, last: end(covering) };
    const before = segments.findLast((s) => end(s) < seq);
    const after = segments.find((s) => s.firstSeq > seq);
    const first = before ? end(before) + 1 : floor;
    return first > seq ? null : { first, last: after ? after.firstSeq - 1 : head };
  }

  /**
   * Whether this device's `segment` reads in full as a signed chain that continues the op held
   * before it. A segment found intact is not read again until its file changes.
   */
  private async verifies(segment: Segment): Promise<boolean> {
    const seen = await fileIdentity(segment.path);
    if (this.intact.get(segment.path) === seen) return true;
    const { ops } = await this.folders.read(segment);
    const before = await this.authenticOp(segment.firstSeq - 1);
    const check = verifyChain(
      { device: this.self, anchor: anchorFor(ops, before && headOf(before)), ops, publicKey: await this.publicKey() },
      this.crypto,
    );
    const whole = ops.length === segment.count && check.error === null;
    if (whole) this.intact.set(segment.path, seen);
    return whole;
  }

  /** This device's held op at `seq` when it reads and its op_id holds. */
  private async authenticOp(seq: number): Promise<OpRecord | undefined> {
    const op = await this.folders.heldOp(seq);
    return op && opIdHolds(op, this.crypto) ? op : undefined;
  }
}
