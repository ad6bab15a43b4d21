import { join } from 'node:path';
import { checkpointFileName, readCheckpointChunks, readCheckpointHeader, writeCheckpointFile } from '../../relay/checkpoint-files.js';
import { ensureDir } from '../../relay/durable-fs.js';
import type { CheckpointFile, CheckpointHeaderJson, JsonObject } from '../../relay/relay.js';

/**
 * The device's own copies of checkpoints it is based on, so that a restart finds its base even
 * when the relay is out of reach or has collected that checkpoint.
 */
export interface CheckpointStore {
  /** Stores a checkpoint (streaming its chunks); storing one already held is a no-op. */
  put(header: CheckpointHeaderJson, chunks: Iterable<JsonObject> | AsyncIterable<JsonObject>): Promise<void>;
  get(hash: string): Promise<{ header: CheckpointHeaderJson; chunks: AsyncIterable<JsonObject> } | null>;
}

export class MemoryCheckpointStore implements CheckpointStore {
  private readonly files = new Map<string, CheckpointFile>();

  async put(header: CheckpointHeaderJson, chunks: Iterable<JsonObject> | AsyncIterable<JsonObject>): Promise<void> {
    const collected: JsonObject[] = [];
    for await (const chunk of chunks) collected.push(chunk);
    this.files.set(header.checkpoint_hash, { header, chunks: collected });
  }

  get(hash: string): Promise<{ header: CheckpointHeaderJson; chunks: AsyncIterable<JsonObject> } | null> {
    const file = this.files.get(hash);
    if (!file) return Promise.resolve(null);
    return Promise.resolve({ header: file.header, chunks: iterate(file.chunks) });
  }
}

/** Checkpoint files under `<data-dir>/checkpoints/`, in the relay's file format. */
export class DirCheckpointStore implements CheckpointStore {
  constructor(private readonly dir: string) {}

  async put(header: CheckpointHeaderJson, chunks: Iterable<JsonObject> | AsyncIterable<JsonObject>): Promise<void> {
    await ensureDir(this.dir);
    await writeCheckpointFile(join(this.dir, checkpointFileName(header.checkpoint_hash)), header, chunks);
  }

  async get(hash: string): Promise<{ header: CheckpointHeaderJson; chunks: AsyncIterable<JsonObject> } | null> {
    const path = join(this.dir, checkpointFileName(hash));
    const header = await readCheckpointHeader(path);
    return header ? { header, chunks: readCheckpointChunks(path) } : null;
  }
}

async function* iterate(chunks: readonly JsonObject[]): AsyncGenerator<JsonObject> {
  await Promise.resolve();
  yield* chunks;
}
