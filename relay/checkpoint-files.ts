import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { OpsyncError } from '../src/oplog/opsync-error.js';
import { createFileDurable } from './durable-fs.js';
import type { CheckpointHeaderJson, JsonObject } from './relay.js';

/**
 * A published checkpoint on disk (relay folder, or a device's local copy): JSON lines, the
 * plaintext header first, then one sealed chunk per line. JSON lines rather than one JSON
 * document so that a checkpoint of any size streams (proposals/relay.md).
 */
export const CHECKPOINT_FILE = /^(ck-[0-9a-f]{64})\.jsonl$/;

export function checkpointFileName(hash: string): string {
  if (!/^ck-[0-9a-f]{64}$/.test(hash)) {
    throw new OpsyncError('invalid_id', `${JSON.stringify(hash.slice(0, 80))} is not a checkpoint hash.`, { field: 'checkpoint_hash' });
  }
  return `${hash}.jsonl`;
}

/** Writes the file once, streaming its chunks (false when it already existed). */
export function writeCheckpointFile(path: string, header: CheckpointHeaderJson, chunks: Iterable<JsonObject> | AsyncIterable<JsonObject>): Promise<boolean> {
  return createFileDurable(path, async (handle) => {
    await handle.write(JSON.stringify(header) + '\n');
    for await (const chunk of chunks) await handle.write(JSON.stringify(chunk) + '\n');
  });
}

/** The header of a checkpoint file; null when absent; throws checkpoint_invalid when unreadable. */
export async function readCheckpointHeader(path: string): Promise<CheckpointHeaderJson | null> {
  let line: string;
  try {
    line = await firstLine(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  const value = parseObject(line);
  if (!value || typeof value.checkpoint_hash !== 'string') {
    throw new OpsyncError('checkpoint_invalid', `${path} has no checkpoint header.`, { location: path });
  }
  return value as CheckpointHeaderJson;
}

/** The sealed chunks of a checkpoint file, streamed line by line. */
export async function* readCheckpointChunks(path: string): AsyncGenerator<JsonObject> {
  const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let first = true;
  for await (const line of lines) {
    if (first || line === '') {
      first = false;
      continue;
    }
    const value = parseObject(line);
    if (!value) throw new OpsyncError('checkpoint_invalid', `${path} holds a chunk that is not a JSON object.`, { location: path });
    yield value;
  }
}

/** The first line of a file (at most 64 KiB are read). */
export async function firstLine(path: string): Promise<string> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(64 * 1024);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    const text = buffer.toString('utf8', 0, bytesRead);
    const newline = text.indexOf('\n');
    return newline === -1 ? text : text.slice(0, newline);
  } finally {
    await handle.close();
  }
}

function parseObject(line: string): JsonObject | null {
  try {
    const value = JSON.parse(line) as unknown;
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : null;
  } catch {
    return null;
  }
}
