import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CHECKPOINT_FILE,
  checkpointFileName,
  readCheckpointChunks,
  readCheckpointHeader,
  writeCheckpointBytes,
} from '../../relay/port/checkpoint-files.js';
import { ensureDir, TEMP_PREFIX } from '../platform/durable-fs.js';
import type { CheckpointHeaderJson, CheckpointStream } from '../../relay/port/relay.js';
import { OpsyncError } from '../util/opsync-error.js';

/**
 * The device's own copies of checkpoints it is based on, so that a restart finds its base even
 * when the relay is out of reach or has collected that checkpoint. Copies are kept as the
 * relay's file bytes (proposals/relay.md §Checkpoint files), so keeping one costs a byte copy.
 */
export interface CheckpointStore {
  /** Stores a checkpoint file's bytes as they stream; storing one already held is a no-op. */
  put(hash: string, bytes: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<void>;
  get(hash: string): Promise<CheckpointStream | null>;
  /** Drops a copy found damaged, so that a good one can take its place. */
  discard(hash: string): Promise<void>;
  /**
   * Drops every copy but those of `keep`; with `temps`, also the temporary files of writes a
   * crash interrupted (only when no write can be under way).
   */
  keepOnly(keep: ReadonlySet<string>, temps: boolean): Promise<void>;
}

export class MemoryCheckpointStore implements CheckpointStore {
  private readonly files = new Map<string, string>();

  async put(hash: string, bytes: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<void> {
    const pieces: Uint8Array[] = [];
    for await (const piece of bytes) pieces.push(piece);
    if (!this.files.has(hash)) this.files.set(hash, Buffer.concat(pieces).toString('utf8'));
  }

  discard(hash: string): Promise<void> {
    this.files.delete(hash);
    return Promise.resolve();
  }

  keepOnly(keep: ReadonlySet<string>): Promise<void> {
    for (const hash of this.files.keys()) if (!keep.has(hash)) this.files.delete(hash);
    return Promise.resolve();
  }

  get(hash: string): Promise<CheckpointStream | null> {
    const text = this.files.get(hash);
    if (text === undefined) return Promise.resolve(null);
    const [header, ...chunks] = text.split('\n').filter((line) => line !== '');
    return Promise.resolve({ header: JSON.parse(header!) as CheckpointHeaderJson, chunks: iterate(chunks) });
  }
}

/** Checkpoint files under `<data-dir>/checkpoints/`. */
export class DirCheckpointStore implements CheckpointStore {
  constructor(private readonly dir: string) {}

  async put(hash: string, bytes: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<void> {
    await ensureDir(this.dir);
    await writeCheckpointBytes(join(this.dir, checkpointFileName(hash)), bytes);
  }

  discard(hash: string): Promise<void> {
    return rm(join(this.dir, checkpointFileName(hash)), { force: true });
  }

  async keepOnly(keep: ReadonlySet<string>, temps: boolean): Promise<void> {
    const names = await readdir(this.dir).catch(() => []);
    const stale = names.filter((name) => {
      const hash = CHECKPOINT_FILE.exec(name)?.[1];
      return hash === undefined ? temps && name.startsWith(TEMP_PREFIX) : !keep.has(hash);
    });
    await Promise.all(stale.map((name) => rm(join(this.dir, name), { force: true })));
  }

  async get(hash: string): Promise<CheckpointStream | null> {
    const path = join(this.dir, checkpointFileName(hash));
    const header = await readCheckpointHeader(path);
    if (!header) return null;
    if (header.checkpoint_hash !== hash) {
      throw new OpsyncError('checkpoint_invalid', `${path} holds checkpoint ${header.checkpoint_hash}, not ${hash}.`, { location: path });
    }
    return { header, chunks: readCheckpointChunks(path) };
  }
}

/** Chunks held in memory, as a checkpoint stream carries them. */
export async function* iterate(chunks: readonly string[]): AsyncGenerator<string> {
  await Promise.resolve();
  yield* chunks;
}
