import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { frontierToJson, parseFrontier } from '../oplog/frontier.js';
import { isCheckpointHash, isDeviceId, type DeviceId } from '../oplog/ids.js';
import { canonicalRecord, parseOpRecord } from '../oplog/op-record.js';
import { OpsyncError } from '../util/opsync-error.js';
import { isJsonObject } from '../util/json.js';
import type { JournalEntry } from './journal.js';

/**
 * Journal file format, version 1 (proposals/journal.md). Every line is
 *
 *     <CRC-32 of the rest of the line, 8 lowercase hex digits> <record>\n
 *
 * - line 1, the header: `{"opsync_journal":1,"device_id":"…"}`;
 * - an op entry: the op record in its canonical encoding, a TAB, and the decrypted payload as
 *   JSON (or `null` while no key opens it). Canonical JSON contains no raw TAB, so the split is
 *   unambiguous;
 * - a base marker: `{"base":{"checkpoint_hash":…,"frontier":{…}}}`.
 *
 * Storing the op canonically lets reopening verify every op_id by hashing the stored bytes
 * (the canonical body is the canonical record minus its `op_id` and `sig` members) instead of
 * re-encoding it: this encoder wrote those bytes, so they hash to the op_id exactly when intact.
 */
export const JOURNAL_VERSION = 1;

export function encodeHeader(device: DeviceId): string {
  return encodeLine(JSON.stringify({ opsync_journal: JOURNAL_VERSION, device_id: device }));
}

export function encodeEntry(entry: JournalEntry): string {
  if (entry.kind === 'op') return encodeLine(`${canonicalRecord(entry.op)}\t${JSON.stringify(entry.plain)}`);
  return encodeLine(JSON.stringify({ base: { checkpoint_hash: entry.checkpoint_hash, frontier: frontierToJson(entry.frontier) } }));
}

/** Offset of the record in a line whose checksum matches, or -1. `end` excludes the newline. */
export function checkedRecordStart(buf: Buffer, start: number, end: number): number {
  if (end - start < 10 || buf[start + 8] !== 0x20) return -1;
  const stored = Number.parseInt(buf.toString('latin1', start, start + 8), 16);
  if (!Number.isInteger(stored)) return -1;
  return crc32(buf.subarray(start + 9, end)) === stored ? start + 9 : -1;
}

export function decodeHeader(json: string, location: string, expected: DeviceId): void {
  let header: unknown;
  try {
    header = JSON.parse(json);
  } catch {
    throw corrupt(location, 1, 'the header is not JSON');
  }
  if (!isJsonObject(header) || typeof header.opsync_journal !== 'number') throw corrupt(location, 1, 'there is no journal header');
  if (header.opsync_journal !== JOURNAL_VERSION) {
    throw new OpsyncError(
      'journal_version',
      `${location} is journal format version ${header.opsync_journal}; this opsync reads version ${JOURNAL_VERSION}.`,
      { location, version: header.opsync_journal },
    );
  }
  if (!isDeviceId(header.device_id) || header.device_id !== expected) {
    const owner = JSON.stringify(header.device_id);
    throw new OpsyncError('journal_mismatch', `${location} belongs to device ${owner}, not to ${expected}.`, {
      location,
      device_id: owner,
    });
  }
}

/**
 * Decodes the record of a checksummed line [start, end). With `verifyDigest`, an op entry's
 * op_id is checked against its stored bytes here; otherwise the caller checks it elsewhere
 * (a worker thread, for large journals) with `opDigestProblem`.
 */
export function decodeEntry(buf: Buffer, start: number, end: number, location: string, line: number, verifyDigest: boolean): JournalEntry {
  const tab = buf.indexOf(0x09, start);
  if (tab !== -1 && tab < end) return decodeOp(buf, start, tab, end, location, line, verifyDigest);
  let value: unknown;
  try {
    value = JSON.parse(buf.toString('utf8', start, end));
  } catch {
    throw corrupt(location, line, 'the line is not JSON');
  }
  const base = isJsonObject(value) ? value.base : undefined;
  if (isJsonObject(base) && isCheckpointHash(base.checkpoint_hash)) {
    const frontier = parseFrontier(base.frontier);
    if (frontier) return { kind: 'base', checkpoint_hash: base.checkpoint_hash, frontier };
  }
  throw corrupt(location, line, 'the line is neither an op entry nor a base marker');
}

export function corrupt(location: string, line: number, reason: string): OpsyncError {
  return new OpsyncError('journal_corrupt', `${location} line ${line} is corrupt: ${reason}.`, { location, line, reason });
}

const OP_ID_MEMBER = Buffer.from('"op_id":"');
const SIG_MEMBER = Buffer.from('"sig":"');
/** `"op_id":"op-<64 hex>",` and `"sig":"<86 base64url>",` */
const OP_ID_MEMBER_LENGTH = 9 + 67 + 2;
const SIG_MEMBER_LENGTH = 7 + 86 + 2;

function decodeOp(
  buf: Buffer,
  start: number,
  tab: number,
  end: number,
  location: string,
  line: number,
  verifyDigest: boolean,
): JournalEntry {
  let op;
  let plain: unknown;
  try {
    const text = buf.toString('utf8', start, end);
    const split = text.indexOf('\t');
    op = parseOpRecord(JSON.parse(text.slice(0, split)));
    plain = JSON.parse(text.slice(split + 1));
  } catch (error) {
    throw corrupt(location, line, error instanceof OpsyncError ? error.message : 'the op entry is not JSON');
  }
  if (plain !== null && !isJsonObject(plain)) throw corrupt(location, line, 'the plaintext is neither null nor an object');
  const problem = verifyDigest ? opDigestProblem(buf, start, tab) : null;
  if (problem) throw corrupt(location, line, `device ${op.device_id} seq ${op.seq}: ${problem}`);
  return { kind: 'op', op, plain };
}

/**
 * Checks the op_id of the canonical op record stored at [start, tab) against the SHA-256 of
 * its canonical body, which is the stored record minus its `op_id` and `sig` members. The
 * members are in canonical order — device_id, hlc, op_id, payload, prev, scope, seq, sig,
 * surface — and nothing before op_id or after sig can contain either key, so both are found
 * by a plain search. Returns why the check failed, or null.
 */
export function opDigestProblem(buf: Buffer, start: number, tab: number): string | null {
  const idAt = buf.indexOf(OP_ID_MEMBER, start);
  const sigAt = buf.lastIndexOf(SIG_MEMBER, tab);
  if (
    idAt === -1 ||
    idAt >= tab ||
    sigAt < idAt ||
    buf[idAt + OP_ID_MEMBER_LENGTH - 1] !== 0x2c ||
    buf[sigAt + SIG_MEMBER_LENGTH - 1] !== 0x2c
  ) {
    return 'the op is not in canonical form';
  }
  const digest = createHash('sha256')
    .update(buf.subarray(start, idAt))
    .update(buf.subarray(idAt + OP_ID_MEMBER_LENGTH, sigAt))
    .update(buf.subarray(sigAt + SIG_MEMBER_LENGTH, tab))
    .digest('hex');
  return digest === buf.toString('latin1', idAt + 12, idAt + 76) ? null : 'op_id is not the hash of the op';
}

function encodeLine(record: string): string {
  return `${crc32(record).toString(16).padStart(8, '0')} ${record}\n`;
}
