import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { DeviceId } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { exists, fsyncDir, TEMP_PREFIX, writeFileDurable, writeText } from '../platform/durable-fs.js';
import { acquireWriterLock, type WriterLock } from './writer-lock.js';
import { checkedRecordStart, corrupt, decodeEntry, decodeHeader, encodeEntry, encodeHeader } from './journal-codec.js';
import type { Journal, JournalEntry, JournalRecovery, JournalVisitor, RewritePlan } from './journal.js';
import { CHUNK_BYTES, readLines } from './line-reader.js';

/**
 * The journal as one append-only file of checksummed lines (proposals/journal.md).
 *
 * Appends are group-committed: every append queued while a write + fdatasync is in flight is
 * written with the next one, in one write and one fdatasync, and each resolves only after the
 * fdatasync that covers it. Opening cuts a torn tail (an append whose fdatasync never finished)
 * and refuses a corrupt line anywhere before the tail, naming the file and line.
 */
export class FileJournal implements Journal {
  private queue: Array<{ text: string; resolve: () => void; reject: (error: Error) => void }> = [];
  private draining: Promise<void> | null = null;
  private paused = false;
  private failure: OpsyncError | null = null;
  private closed = false;
  /** Group-commit statistics, for benchmarks and `sync.stats`. */
  readonly stats = { batches: 0, entries: 0 };

  private constructor(
    readonly location: string,
    private readonly device: DeviceId,
    private handle: FileHandle,
    private readonly lock: WriterLock,
  ) {}

  /**
   * Opens (creating if absent) the journal at `path`, recovers its tail and visits every entry.
   * Errors thrown by `visit` abort the open and release the lock.
   */
  /** Opens (creating) the journal at `path`, visiting every entry; `progress` hears the bytes read of the file's size. */
  static async open(
    path: string,
    device: DeviceId,
    visit: JournalVisitor,
    progress?: (done: number, total: number) => void,
  ): Promise<{ journal: FileJournal; recovery: JournalRecovery }> {
    const lock = await acquireWriterLock(`${path}.lock`, `The journal ${path}`);
    try {
      if (!(await exists(path))) await writeFileDurable(path, encodeHeader(device), 0o600);
      const handle = await open(path, 'r+');
      const size = (await handle.stat()).size;
      progress?.(0, size);
      let recovery: JournalRecovery;
      try {
        const scan = await scanFile(handle, path, device, {
          visit,
          ...(progress ? { afterChunk: (position: number) => progress(position, size) } : {}),
        });
        recovery = { cutLines: scan.cutLines, cutBytes: scan.size - scan.goodLength };
        if (recovery.cutBytes > 0) {
          await handle.truncate(scan.goodLength);
          await handle.sync();
        }
      } finally {
        await handle.close();
      }
      const appendHandle = await open(path, 'a');
      return { journal: new FileJournal(path, device, appendHandle, lock), recovery };
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  append(entries: readonly JournalEntry[]): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(closedError(this.location));
    let text = '';
    for (const entry of entries) text += encodeEntry(entry);
    return new Promise((resolve, reject) => {
      this.queue.push({ text, resolve, reject });
      this.kick();
    });
  }

  /** Visits the entries durable when it is called; appends made meanwhile proceed and are not visited. */
  async replay(visit: JournalVisitor): Promise<void> {
    this.paused = true;
    let limit: number;
    try {
      await this.settle();
      limit = (await stat(this.location)).size;
    } finally {
      this.paused = false;
      this.kick();
    }
    const handle = await open(this.location, 'r');
    try {
      const scan = await scanFile(handle, this.location, this.device, { limit, visit });
      if (scan.cutLines > 0) throw corrupt(this.location, scan.firstBadLine, 'the file changed under the open journal');
    } finally {
      await handle.close();
    }
  }

  async rewrite(plan: RewritePlan): Promise<void> {
    if (this.failure) throw this.failure;
    this.paused = true;
    try {
      await this.settle();
      const temp = join(dirname(this.location), `${TEMP_PREFIX}${basename(this.location)}`);
      await this.writeRewritten(temp, plan);
      // Opened before the rename (the handle follows the file): a process out of file
      // descriptors fails here with the old journal still in place and still written.
      const next = await open(temp, 'a');
      try {
        await rename(temp, this.location);
      } catch (error) {
        await next.close();
        throw error;
      }
      try {
        await fsyncDir(dirname(this.location));
      } catch (error) {
        // The new file is in place but its name may not be durable: nothing more is written.
        await next.close();
        this.failure = failed(this.location, error);
        throw this.failure;
      }
      await this.handle.close();
      this.handle = next;
    } finally {
      this.paused = false;
      this.kick();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.settle();
    await this.handle.close();
    await this.lock.release();
  }

  /** Resolves once nothing is being written (the queue may refill afterwards unless paused). */
  private async settle(): Promise<void> {
    while (this.draining) await this.draining;
  }

  private kick(): void {
    if (this.draining || this.paused || this.queue.length === 0) return;
    this.draining = this.drain().finally(() => {
      this.draining = null;
      this.kick();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.paused) {
      const batch = this.queue;
      this.queue = [];
      try {
        await writeText(this.handle, batch.map((item) => item.text).join(''));
        await this.handle.datasync();
      } catch (error) {
        this.failure = failed(this.location, error);
        for (const item of [...batch, ...this.queue]) item.reject(this.failure);
        this.queue = [];
        return;
      }
      this.stats.batches++;
      this.stats.entries += batch.length;
      for (const item of batch) item.resolve();
    }
  }

  private async writeRewritten(temp: string, plan: RewritePlan): Promise<void> {
    const out = await open(temp, 'w', 0o600);
    try {
      let chunk = encodeHeader(this.device) + plan.head.map(encodeEntry).join('');
      const source = await open(this.location, 'r');
      const size = (await source.stat()).size;
      plan.progress?.(0, size);
      try {
        await scanFile(source, this.location, this.device, {
          visitRaw: (entry, raw) => {
            if (plan.keep(entry)) chunk += raw();
          },
          afterChunk: async (position) => {
            plan.progress?.(position, size);
            if (chunk.length < CHUNK_BYTES) return;
            await writeText(out, chunk);
            chunk = '';
          },
        });
      } finally {
        await source.close();
      }
      await writeText(out, chunk);
      await out.sync();
    } catch (error) {
      await out.close();
      await rm(temp, { force: true });
      throw error;
    }
    await out.close();
  }
}

interface ScanOptions {
  /** Bytes to read; defaults to the whole file. */
  readonly limit?: number;
  readonly visit?: JournalVisitor;
  /** Like visit, with the entry's raw line (checksum and newline included) on demand. */
  readonly visitRaw?: (entry: JournalEntry, raw: () => string) => void;
  readonly afterChunk?: (position: number) => Promise<void> | void;
}

interface Scan {
  readonly size: number;
  /** Bytes up to the end of the last good line. */
  readonly goodLength: number;
  readonly cutLines: number;
  readonly firstBadLine: number;
}

/** Journals at least this large verify op ids on a worker thread while the main thread parses. */
const PARALLEL_DIGEST_BYTES = 32 * 1024 * 1024;
const DIGEST_WORKER = new URL('./digest-worker.js', import.meta.url);

/**
 * Reads the file line by line, verifying checksums, decoding entries and their op ids. A line
 * whose checksum fails is tolerated only at the tail (it is reported as cut); a complete line
 * after it means the damage is in the middle, which is an error naming the line.
 */
async function scanFile(handle: FileHandle, location: string, device: DeviceId, options: ScanOptions): Promise<Scan> {
  const { visit, visitRaw } = options;
  const size = options.limit ?? (await handle.stat()).size;
  const parallel = size >= PARALLEL_DIGEST_BYTES ? startDigestWorker(location, size) : null;
  let goodLength = 0;
  let firstBadLine = 0;
  try {
    const { lines, tailBytes } = await readLines(
      handle,
      size,
      (data, start, end, line, nextOffset) => {
        if (firstBadLine !== 0) throw corrupt(location, firstBadLine, 'its checksum does not match and valid lines follow it');
        const recordStart = checkedRecordStart(data, start, end);
        if (recordStart === -1) {
          firstBadLine = line;
          return;
        }
        if (line === 1) decodeHeader(data.toString('utf8', recordStart, end), location, device);
        else {
          const entry = decodeEntry(data, recordStart, end, location, line, parallel === null);
          visit?.(entry, line);
          if (visitRaw) visitRaw(entry, () => data.toString('utf8', start, end + 1));
        }
        goodLength = nextOffset;
      },
      options.afterChunk,
    );
    if (lines === 0 || (firstBadLine === 1 && goodLength === 0)) throw corrupt(location, 1, 'the header line is missing or damaged');
    const mismatch = parallel ? await parallel : null;
    const lastGood = firstBadLine === 0 ? lines : firstBadLine - 1;
    if (mismatch && mismatch.line <= lastGood) throw corrupt(location, mismatch.line, mismatch.reason);
    const cutLines = (firstBadLine !== 0 ? 1 : 0) + (tailBytes > 0 ? 1 : 0);
    return { size, goodLength, cutLines, firstBadLine: firstBadLine || lines + 1 };
  } finally {
    await parallel?.catch(() => null);
  }
}

/** Verifies op ids on a worker thread; null when the compiled worker is not available (running from sources). */
function startDigestWorker(path: string, limit: number): Promise<{ line: number; reason: string } | null> | null {
  if (!existsSync(DIGEST_WORKER)) return null;
  return new Promise((resolve, reject) => {
    const worker = new Worker(DIGEST_WORKER, { workerData: { path, limit } });
    worker.once('message', (result: { line: number; reason: string } | null) => resolve(result));
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`the journal digest worker exited with code ${code}`));
    });
  });
}

function failed(location: string, cause: unknown): OpsyncError {
  return new OpsyncError(
    'journal_failed',
    `Writing ${location} failed (${(cause as Error).message}); no further op is accepted until the daemon restarts and recovers the journal.`,
    { location },
  );
}

function closedError(location: string): OpsyncError {
  return new OpsyncError('session_closed', `The journal ${location} is closed.`, { location });
}
