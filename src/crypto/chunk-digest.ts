import { createHmac } from 'node:crypto';
import type { ScopeKey } from './scope-key.js';

/**
 * Keys derived from a scope key for checkpoints (proposals/checkpoint.md §Authentication): an
 * HMAC-SHA256 of a distinct label under the scope key, so that no derived key is ever a sealing
 * key, and a chunk digest or header MAC reveals nothing of the scope key.
 */
export const CHUNK_DIGEST_LABEL = 'opsync checkpoint chunk digest v2';
export const HEADER_MAC_LABEL = 'opsync checkpoint header mac v2';

/**
 * The digest of a chunk's plaintext under `key`, the key that seals it: keyed, so that the relay
 * cannot confirm a guess of a chunk's content (an unkeyed SHA-256 of `{"agents":[["payroll-bot",1]]}`
 * could be).
 */
export function keyedChunkDigest(key: ScopeKey, plain: Uint8Array | string): string {
  return createHmac('sha256', derivedKey(key, CHUNK_DIGEST_LABEL)).update(plain).digest('hex');
}

const derived = new WeakMap<ScopeKey, Map<string, Buffer>>();

/** HMAC-SHA256(scope key, label), computed once per key and label. */
export function derivedKey(key: ScopeKey, label: string): Buffer {
  let byLabel = derived.get(key);
  if (!byLabel) derived.set(key, (byLabel = new Map<string, Buffer>()));
  let subkey = byLabel.get(label);
  if (!subkey) byLabel.set(label, (subkey = createHmac('sha256', key.key).update(label).digest()));
  return subkey;
}
