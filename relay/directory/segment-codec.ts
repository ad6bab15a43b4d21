import type { DeviceId } from '../../src/oplog/ids.js';
import { canonicalRecord, parseOpRecord, type OpRecord } from '../../src/oplog/op-record.js';

/**
 * Segment files of the directory relay, format version 1 (proposals/relay.md):
 *
 *     {"opsync_segment":1,"device_id":"…","first_seq":N,"count":M}\n
 *     <op record, canonical JSON>\n      × M
 *
 * named `<first_seq, 12 digits>.jsonl` under `devices/<device_id>/ops/`. Immutable once renamed
 * into place. Readers treat every file as untrusted and report what they cannot use.
 */
export const SEGMENT_VERSION = 1;
/**
 * Readers read a segment whole, so a push is written as segments of at most this many bytes of
 * op records (one op, at most ~1.4 MiB, always fits); a larger file is not one of ours.
 */
export const MAX_SEGMENT_BYTES = 32 * 2 ** 20;
export const SEGMENT_NAME = /^(\d{12})\.jsonl$/;

export function segmentName(firstSeq: number): string {
  return `${String(firstSeq).padStart(12, '0')}.jsonl`;
}

export function encodeSegment(device: DeviceId, ops: readonly OpRecord[]): string {
  const header = JSON.stringify({ opsync_segment: SEGMENT_VERSION, device_id: device, first_seq: ops[0]!.seq, count: ops.length });
  return `${header}\n${ops.map((op) => canonicalRecord(op)).join('\n')}\n`;
}

/** `ops` cut into runs whose segments stay within MAX_SEGMENT_BYTES (records are ASCII: sealed payloads). */
export function segmentRuns(ops: readonly OpRecord[]): OpRecord[][] {
  const runs: OpRecord[][] = [];
  let run: OpRecord[] = [];
  let bytes = 0;
  for (const op of ops) {
    const size = canonicalRecord(op).length + 1;
    if (run.length > 0 && bytes + size > MAX_SEGMENT_BYTES - 1024) {
      runs.push(run);
      run = [];
      bytes = 0;
    }
    run.push(op);
    bytes += size;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

export interface SegmentHeader {
  readonly firstSeq: number;
  readonly count: number;
}

export type SegmentProblem = 'segment_corrupt' | 'foreign_ops' | 'segment_mismatch';

export interface DecodedSegment {
  readonly header: SegmentHeader | null;
  /** The ops that decoded, in order, up to the first problem. */
  readonly ops: readonly OpRecord[];
  /** Each op's record size in the file (its line's length). */
  readonly sizes: readonly number[];
  readonly problem: SegmentProblem | null;
}

/** Decodes a segment of `device` named for `firstSeq`, keeping the valid prefix of its ops. */
export function decodeSegment(text: string, device: DeviceId, firstSeq: number): DecodedSegment {
  const lines = text.split('\n');
  const header = decodeHeader(lines[0] ?? '', device, firstSeq);
  if (typeof header === 'string') return { header: null, ops: [], sizes: [], problem: header };
  const ops: OpRecord[] = [];
  const sizes: number[] = [];
  const stop = (problem: SegmentProblem) => ({ header, ops, sizes, problem });
  for (let i = 0; i < header.count; i++) {
    const line = lines[i + 1];
    if (line === undefined || (line === '' && i + 2 >= lines.length)) return stop('segment_corrupt');
    let op: OpRecord;
    try {
      op = parseOpRecord(JSON.parse(line));
    } catch {
      return stop('segment_corrupt');
    }
    if (op.device_id !== device) return stop('foreign_ops');
    if (op.seq !== firstSeq + i) return stop('segment_mismatch');
    ops.push(op);
    sizes.push(line.length);
  }
  return { header, ops, sizes, problem: null };
}

/** The header alone, for listing a device's seq ranges without reading its ops. */
export function decodeHeader(line: string, device: DeviceId, firstSeq: number): SegmentHeader | SegmentProblem {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return 'segment_corrupt';
  }
  if (typeof value !== 'object' || value === null) return 'segment_corrupt';
  const { opsync_segment: version, device_id: owner, first_seq: first, count } = value as Record<string, unknown>;
  if (version !== SEGMENT_VERSION || !Number.isSafeInteger(count) || (count as number) < 1) return 'segment_corrupt';
  if (owner !== device) return 'foreign_ops';
  if (first !== firstSeq) return 'segment_mismatch';
  return { firstSeq, count: count as number };
}
