import { OpsyncError } from '../../src/util/opsync-error.js';
import { createFileDurable, openUntrusted, readAtMost, writeFileDurable, type FileData } from '../../src/platform/durable-fs.js';
import type { CheckpointFile, CheckpointHeaderJson, JsonObject } from './relay.js';

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

/** The file's bytes: the header line, then one line per sealed chunk (a chunk holds no newline). */
export function* checkpointFileBytes(file: CheckpointFile): Generator<Uint8Array> {
  yield Buffer.from(JSON.stringify(file.header) + '\n');
  for (const chunk of file.chunks) {
    if (chunk.includes('\n')) throw new OpsyncError('checkpoint_invalid', 'A checkpoint chunk must be one line of JSON.');
    yield Buffer.from(chunk + '\n');
  }
}

type Bytes = Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** Writes a checkpoint file once from its bytes, streamed (false when it already existed). */
export function writeCheckpointBytes(path: string, bytes: Bytes): Promise<boolean> {
  return createFileDurable(path, streamed(bytes));
}

/** Puts a checkpoint file in place from its bytes, streamed, replacing a damaged one. */
export function replaceCheckpointBytes(path: string, bytes: Bytes): Promise<void> {
  return writeFileDurable(path, streamed(bytes));
}

function streamed(bytes: Bytes): FileData {
  return async (handle) => {
    for await (const piece of bytes) await handle.write(piece);
  };
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

/**
 * A sealed chunk's line is at most ~65 MiB (16 Mi characters of chunk text, up to 3 bytes each
 * in UTF-8, base64); a longer line is damage, refused before it is held in memory.
 */
export const MAX_CHUNK_LINE_BYTES = 128 * 2 ** 20;

/** The sealed chunks of a checkpoint file (their JSON texts), streamed line by line. */
export async function* readCheckpointChunks(path: string): AsyncGenerator<string> {
  const handle = await openUntrusted(path);
  try {
    const buffer = Buffer.allocUnsafe(8 * 1024 * 1024);
    let pieces: Buffer[] = [];
    let held = 0;
    let first = true;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      let start = 0;
      for (let nl = buffer.indexOf(10, 0); nl !== -1 && nl < bytesRead; nl = buffer.indexOf(10, start)) {
        pieces.push(buffer.subarray(start, nl));
        const line = pieces.length === 1 ? pieces[0]!.toString('utf8') : Buffer.concat(pieces).toString('utf8');
        pieces = [];
        held = 0;
        start = nl + 1;
        if (!first && line !== '') yield line;
        first = false;
      }
      if (start < bytesRead) {
        pieces.push(Buffer.from(buffer.subarray(start, bytesRead)));
        held += bytesRead - start;
        if (held > MAX_CHUNK_LINE_BYTES)
          throw new OpsyncError('checkpoint_invalid', `${path} has a line longer than any checkpoint chunk.`, { location: path });
      }
    }
  } finally {
    await handle.close();
  }
}

/** The first line of an untrusted file (at most 64 KiB are read; links and non-regular files are refused, `openUntrusted`). */
export async function firstLine(path: string): Promise<string> {
  const handle = await openUntrusted(path);
  try {
    const text = (await readAtMost(handle, 64 * 1024)).toString('utf8');
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
