import { canonicalize } from './canonical.js';
import type { CoreCrypto } from './core-crypto.js';
import { compareHlc, isHlc, type Hlc } from './hlc.js';
import { isDeviceId, isOpId, type DeviceId, type OpId } from './ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { isScope, type Scope } from './scope.js';
import { isSurface, type Surface } from './surface.js';
import { BASE64URL, isCharsetString } from '../util/charset.js';
import { isJsonObject, type JsonObject } from '../util/json.js';
import { compareStrings } from '../util/ordered.js';

/**
 * The op record, format version 1 (proposals/op-record.md).
 *
 * `op_id` = "op-" + hex SHA-256 of the canonical encoding of every other field except `sig`;
 * `sig` = Ed25519 over the UTF-8 bytes of `op_id` by the device key. On the wire and on the
 * relay `payload` is an encryption envelope; the fold sees the decrypted payload.
 */
export const OP_RECORD_VERSION = 1;

export interface OpRecord {
  readonly op_id: OpId;
  readonly device_id: DeviceId;
  readonly seq: number;
  readonly prev: OpId | null;
  readonly hlc: Hlc;
  readonly scope: Scope;
  readonly surface: Surface;
  readonly payload: JsonObject;
  readonly sig: string;
}

/** The fields `op_id` covers. */
export type OpBody = Omit<OpRecord, 'op_id' | 'sig'>;

/** The head of a device's chain, or a checkpoint's anchor for it. */
export interface ChainHead {
  readonly seq: number;
  readonly op_id: OpId;
  readonly hlc: Hlc;
}

const FIELDS = ['device_id', 'hlc', 'op_id', 'payload', 'prev', 'scope', 'seq', 'sig', 'surface'];

export function opIdOf(body: OpBody, crypto: Pick<CoreCrypto, 'sha256Hex'>): OpId {
  return hashBody(body, crypto).op_id;
}

/**
 * Canonical record texts of ops whose op id this process computed or verified, so storing an op
 * (journal line, relay segment) does not encode it again and checking it again (a push) does not
 * hash it again. Weak: entries go with their ops.
 */
const recordTexts = new WeakMap<OpRecord, string>();

/** The op id and the canonical text it hashes (the body: every field but `op_id` and `sig`). */
export function hashBody(body: OpBody, crypto: Pick<CoreCrypto, 'sha256Hex'>): { op_id: OpId; text: string } {
  const text = canonicalize({
    device_id: body.device_id,
    hlc: body.hlc,
    payload: body.payload,
    prev: body.prev,
    scope: body.scope,
    seq: body.seq,
    surface: body.surface,
  });
  return { op_id: `op-${crypto.sha256Hex(text)}` as OpId, text };
}

/** Whether `op.op_id` is the hash of its body; an op this process minted or verified is not hashed again. */
export function opIdHolds(op: OpRecord, crypto: Pick<CoreCrypto, 'sha256Hex'>): boolean {
  if (recordTexts.has(op)) return true;
  const { op_id, text } = hashBody(op, crypto);
  if (op_id !== op.op_id) return false;
  recordTexts.set(op, recordFromBody(text, op.op_id, op.sig));
  return true;
}

/**
 * The canonical record built from its body text: members are in canonical order (device_id,
 * hlc, op_id, payload, prev, scope, seq, sig, surface), so the record is the body with `op_id`
 * inserted before `payload` and `sig` before `surface`; nothing before `payload` or after
 * `surface` can contain those member names.
 */
export function recordFromBody(bodyText: string, opId: OpId, sig: string): string {
  const payloadAt = bodyText.indexOf(',"payload":');
  const surfaceAt = bodyText.lastIndexOf(',"surface":');
  return `${bodyText.slice(0, payloadAt)},"op_id":"${opId}"${bodyText.slice(payloadAt, surfaceAt)},"sig":"${sig}"${bodyText.slice(surfaceAt)}`;
}

/** Remembers `op`'s canonical record text; only for an op whose id the caller computed or verified. */
export function rememberRecordText(op: OpRecord, text: string): void {
  recordTexts.set(op, text);
}

/** The canonical encoding of a whole record (remembered when this process minted or verified it). */
export function canonicalRecord(op: OpRecord): string {
  return recordTexts.get(op) ?? canonicalize(op);
}

/** The canonical total order of ops everywhere: (hlc, op_id). */
export function compareOps(a: { hlc: Hlc; op_id: OpId }, b: { hlc: Hlc; op_id: OpId }): number {
  return compareHlc(a.hlc, b.hlc) || compareStrings(a.op_id, b.op_id);
}

export function headOf(op: OpRecord): ChainHead {
  return { seq: op.seq, op_id: op.op_id, hlc: op.hlc };
}

/**
 * Checks the *shape* of an untrusted op record: every field present with the right type and
 * format, no other field. It does not check the hash or the chain (see chain.ts).
 */
export function parseOpRecord(value: unknown): OpRecord {
  if (!isJsonObject(value)) throw invalid('it is not a JSON object');
  if (Object.keys(value).length !== FIELDS.length || !FIELDS.every((field) => field in value)) {
    throw invalid(`its fields are [${Object.keys(value).sort().join(', ')}], expected exactly [${FIELDS.join(', ')}]`);
  }
  if (!isOpId(value.op_id)) throw invalid('op_id is not "op-" + 64 hex digits');
  if (!isDeviceId(value.device_id)) throw invalid('device_id is not a valid device id');
  if (!Number.isSafeInteger(value.seq) || (value.seq as number) < 0) throw invalid('seq is not a non-negative integer');
  if (value.prev !== null && !isOpId(value.prev)) throw invalid('prev is neither null nor an op id');
  if (!isHlc(value.hlc)) throw invalid('hlc is not {wall_ms, counter, device_id}');
  if (!isScope(value.scope)) throw invalid('scope is neither "personal" nor {org}');
  if (!isSurface(value.surface)) throw invalid(`surface ${JSON.stringify(value.surface)} is not a surface`);
  if (!isJsonObject(value.payload)) throw invalid('payload is not a JSON object');
  if (!isCharsetString(value.sig, BASE64URL, 86)) throw invalid('sig is not a base64url Ed25519 signature');
  return value as unknown as OpRecord;
}

function invalid(reason: string): OpsyncError {
  return new OpsyncError('invalid_record', `Malformed op record: ${reason}.`, { reason });
}
