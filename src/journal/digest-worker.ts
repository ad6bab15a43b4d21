/**
 * Worker thread: verifies the op_id digest of every op line of a journal, so that reopening a
 * large journal hashes on the second core while the main thread parses and folds. Posts the
 * first mismatch (line and reason) or null. Checksums are the main thread's business: it
 * decides between a torn tail and corruption and ignores what this reports past a damaged line.
 */
import { open } from 'node:fs/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { opDigestProblem } from './journal-codec.js';
import { readLines } from './line-reader.js';

const { path, limit } = workerData as { path: string; limit: number };
const handle = await open(path, 'r');
let mismatch: { line: number; reason: string } | null = null;
try {
  await readLines(handle, limit, (buf, start, end, line) => {
    if (mismatch || line === 1) return;
    const recordStart = start + 9;
    const tab = buf.indexOf(0x09, recordStart);
    if (tab === -1 || tab >= end) return;
    const reason = opDigestProblem(buf, recordStart, tab);
    if (reason) mismatch = { line, reason };
  });
} finally {
  await handle.close();
}
parentPort!.postMessage(mismatch);
