import type { FileHandle } from 'node:fs/promises';

/**
 * Reads a file line by line in large chunks. `onLine` receives the chunk buffer, the line's
 * [start, end) in it (without the newline), its 1-based number and the file offset just past
 * its newline; the buffer is reused after the call returns. Bytes after the last newline are a
 * partial line, reported as `tailBytes`.
 */
export async function readLines(
  handle: FileHandle,
  limit: number,
  onLine: (buf: Buffer, start: number, end: number, line: number, nextOffset: number) => void,
  afterChunk?: () => Promise<void>,
): Promise<{ lines: number; tailBytes: number }> {
  let carry = Buffer.alloc(0);
  let line = 0;
  let position = 0;
  const readBuffer = Buffer.allocUnsafe(CHUNK_BYTES);
  while (position < limit) {
    const { bytesRead } = await handle.read(readBuffer, 0, Math.min(CHUNK_BYTES, limit - position), position);
    if (bytesRead === 0) break;
    const base = position - carry.length;
    position += bytesRead;
    const data = carry.length > 0 ? Buffer.concat([carry, readBuffer.subarray(0, bytesRead)]) : readBuffer.subarray(0, bytesRead);
    let start = 0;
    for (let nl = data.indexOf(10, start); nl !== -1; nl = data.indexOf(10, start)) {
      onLine(data, start, nl, ++line, base + nl + 1);
      start = nl + 1;
    }
    carry = Buffer.from(data.subarray(start));
    if (afterChunk) await afterChunk();
  }
  return { lines: line, tailBytes: carry.length };
}

export const CHUNK_BYTES = 4 * 1024 * 1024;
