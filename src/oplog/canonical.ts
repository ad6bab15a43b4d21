import { OpsyncError } from '../util/opsync-error.js';

/**
 * The canonical encoding: RFC 8785, the JSON Canonicalization Scheme. This module is the only
 * serializer whose output is hashed; everything that computes an op_id, a checkpoint hash or a
 * record digest goes through `canonicalize`. Frozen at version 1 (proposals/op-record.md).
 *
 * - object members sorted by the UTF-16 code units of their names, no whitespace;
 * - numbers in ECMAScript shortest round-trip form (`JSON.stringify` of a finite double),
 *   `-0` as `0`, NaN and ±Infinity refused;
 * - strings escaped as `JSON.stringify` does (which is what RFC 8785 §3.2.2.2 prescribes),
 *   lone surrogates refused (RFC 8785 requires I-JSON input).
 */
export const CANONICAL_ENCODING_VERSION = 1;

/** Deepest nesting the encoder accepts; edge validation enforces a far smaller limit first. */
const MAX_DEPTH = 512;

const LONE_SURROGATE = /\p{Cs}/u;
/** Printable ASCII but `"` and `\`: JSON.stringify leaves such a string as it is, between quotes. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

export function canonicalize(value: unknown): string {
  return encode(value, 0);
}

function encode(value: unknown, depth: number): string {
  switch (typeof value) {
    case 'string':
      return encodeString(value);
    case 'number':
      if (!Number.isFinite(value)) throw refuse(`the number ${String(value)} has no JSON form`);
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object':
      if (value === null) return 'null';
      if (depth >= MAX_DEPTH) throw refuse(`nesting deeper than ${MAX_DEPTH} levels`);
      return Array.isArray(value) ? encodeArray(value, depth + 1) : encodeObject(value as Record<string, unknown>, depth + 1);
    default:
      throw refuse(`a value of type ${typeof value} has no JSON form`);
  }
}

function encodeString(value: string): string {
  if (PLAIN.test(value)) return `"${value}"`;
  if (LONE_SURROGATE.test(value)) throw refuse('a string contains a lone UTF-16 surrogate');
  return JSON.stringify(value);
}

function encodeArray(value: readonly unknown[], depth: number): string {
  let out = '[';
  for (let i = 0; i < value.length; i++) {
    if (i > 0) out += ',';
    out += encode(value[i], depth);
  }
  return out + ']';
}

function encodeObject(value: Record<string, unknown>, depth: number): string {
  if (Object.getPrototypeOf(value) !== Object.prototype && Object.getPrototypeOf(value) !== null) {
    throw refuse('only plain objects have a JSON form');
  }
  const keys = sortKeys(Object.keys(value));
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    if (i > 0) out += ',';
    out += encodeString(key) + ':' + encode(value[key], depth);
  }
  return out + '}';
}

/**
 * `keys` in ascending order of UTF-16 code units (what `sort()` orders by, and `<` compares).
 * `Array.prototype.sort` allocates scratch space on every call, which made it the largest
 * allocation of an append; objects of a few members — nearly all of them — are sorted in place
 * by insertion instead, and objects already in order (built so) cost one pass.
 */
function sortKeys(keys: string[]): string[] {
  if (keys.length > 16) return keys.sort();
  for (let i = 1; i < keys.length; i++) {
    const key = keys[i]!;
    let j = i - 1;
    for (; j >= 0 && keys[j]! > key; j--) keys[j + 1] = keys[j]!;
    keys[j + 1] = key;
  }
  return keys;
}

function refuse(reason: string): OpsyncError {
  return new OpsyncError('invalid_json', `Cannot encode canonically: ${reason}.`, { reason });
}
