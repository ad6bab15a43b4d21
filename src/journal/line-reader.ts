import type { FileHandle } from 'node:fs/promises';

/**
 * Reads a file line by line in large chunks. `onLine` receives the chunk buffer, the line's
 * [start, end) in it (without the newline), its 1-based number and the file offset just past
 * its newline; the buffer is reused after the call returns. Bytes after the last newline are a
 * partial line, reported as `tailBytes`. A line longer than MAX_LINE_BYTES is damage, not data:
 * it is passed over without being held and reported as an empty line.
 */
export async function readLines(
  handle: FileHandle,
  limit: number,
  onLine: (buf: Buffer, start: number, end: number, line: number, nextOffset: number) => void,
  afterChunk?: (position: number) => Promise<void> | void,
): Promise<{ lines: number; tailBytes: number }> {
  let carry = Buffer.alloc(0);
  let line = 0;
  let position = 0;
  /** File offset where the line not yet ended begins. */
  let lineStart = 0;
  let overlong = false;
  const readBuffer = Buffer.allocUnsafe(CHUNK_BYTES);
  while (position < limit) {
    const { bytesRead } = await handle.read(readBuffer, 0, Math.min(CHUNK_BYTES, limit - position), position);
    if (bytesRead === 0) break;
    const base = position - carry.length;
    position += bytesRead;
    const data = carry.length > 0 ? Buffer.concat([carry, readBuffer.subarray(0, bytesRead)]) : readBuffer.subarray(0, bytesRead);
    let start = 0;
    for (let nl = data.indexOf(10, start); nl !== -1; nl = data.indexOf(10, start)) {
      onLine(data, overlong ? nl : start, nl, ++line, base + nl + 1);
      overlong = false;
      start = nl + 1;
      lineStart = base + start;
    }
    overlong ||= position - lineStart > MAX_LINE_BYTES;
    carry = overlong ? Buffer.alloc(0) : Buffer.from(data.subarray(start));
    if (afterChunk) await afterChunk(position);
  }
  return { lines: line, tailBytes: position - lineStart };
}

export const CHUNK_BYTES = 4 * 1024 * 1024;
/** Far above any journal line (a payload is at most 1 MiB; its line, with the sealed copy, ~2.5 MiB). */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;
