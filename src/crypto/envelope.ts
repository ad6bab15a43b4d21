import { createHmac } from 'node:crypto';
import { canonicalize } from '../oplog/canonical.js';
import type { DeviceId } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { scopeKey, type Scope } from '../oplog/scope.js';
import type { Surface } from '../oplog/surface.js';
import { isJsonObject, type JsonObject } from '../util/json.js';
import type { Keyring } from './keyring.js';
import type { ScopeKey } from './scope-key.js';
import { xchachaOpen, xchachaSeal } from './xchacha.js';

/**
 * The payload envelope, version 1 (proposals/envelope.md). XChaCha20-Poly1305 (xchacha.ts) with a random
 * 192-bit nonce (large enough that random nonces never collide under one key). The additional
 * authenticated data binds the ciphertext to the op's device, seq, scope and surface, so a
 * ciphertext cannot be replayed into another op. `op_id` hashes the envelope, so the relay
 * verifies chains without keys.
 */
export const ENVELOPE_VERSION = 1;
export const ENVELOPE_ALG = 'xchacha20poly1305';

export interface Envelope {
  readonly v: typeof ENVELOPE_VERSION;
  readonly alg: typeof ENVELOPE_ALG;
  readonly kid: string;
  readonly nonce: string;
  readonly ct: string;
}

/** What the ciphertext of an op payload is bound to. */
export interface OpBinding {
  readonly device_id: DeviceId;
  readonly seq: number;
  readonly scope: Scope;
  readonly surface: Surface;
}

export type OpenResult = { ok: true; payload: JsonObject } | { ok: false; reason: 'no_key' | 'malformed' | 'forged'; kid: string | null };

/** Seals a payload given as its canonical JSON text (the caller has it already, to check its size). */
export function sealPayload(key: ScopeKey, canonicalPayload: string, binding: OpBinding, nonce: Uint8Array): Envelope {
  return seal(key, Buffer.from(canonicalPayload, 'utf8'), opAad(binding), nonce);
}

/** Opens an op's envelope with the keyring; failures are values (held ops are normal). */
export function openPayload(keyring: Keyring, envelope: unknown, binding: OpBinding): OpenResult {
  const parsed = parseEnvelope(envelope);
  if (!parsed) return { ok: false, reason: 'malformed', kid: null };
  const key = keyring.byId(parsed.kid);
  if (!key) return { ok: false, reason: 'no_key', kid: parsed.kid };
  if (scopeKey(key.scope) !== scopeKey(binding.scope)) return { ok: false, reason: 'forged', kid: parsed.kid };
  const plain = open(key, parsed, opAad(binding));
  if (!plain) return { ok: false, reason: 'forged', kid: parsed.kid };
  try {
    const payload: unknown = JSON.parse(Buffer.from(plain).toString('utf8'));
    return isJsonObject(payload) ? { ok: true, payload } : { ok: false, reason: 'malformed', kid: parsed.kid };
  } catch {
    return { ok: false, reason: 'malformed', kid: parsed.kid };
  }
}

/**
 * Deterministic sealing for checkpoint sections: the nonce is an HMAC of the content under the
 * key, so two devices that cut the same checkpoint publish byte-identical files, and distinct
 * contents never share a nonce.
 */
export function sealDeterministic(key: ScopeKey, plaintext: Uint8Array, aad: string): Envelope {
  const nonce = createHmac('sha256', key.key).update('opsync checkpoint nonce v1\0').update(plaintext).digest().subarray(0, 24);
  return seal(key, plaintext, aad, nonce);
}

/** Opens a non-op envelope (checkpoint sections); throws a named error when it cannot. */
export function openBytes(keyring: Keyring, envelope: unknown, aad: string, what: string): Uint8Array {
  const parsed = parseEnvelope(envelope);
  if (!parsed) throw new OpsyncError('decrypt_failed', `${what} is not a valid envelope.`);
  const key = keyring.byId(parsed.kid);
  if (!key) throw new OpsyncError('key_missing', `${what} needs key ${parsed.kid}, which this device does not hold.`, { kid: parsed.kid });
  const plain = open(key, parsed, aad);
  if (!plain) throw new OpsyncError('decrypt_failed', `${what} does not decrypt: it was altered or bound to other data.`);
  return plain;
}

export function parseEnvelope(value: unknown): Envelope | null {
  if (!isJsonObject(value)) return null;
  const { v, alg, kid, nonce, ct } = value;
  if (v !== ENVELOPE_VERSION || alg !== ENVELOPE_ALG || Object.keys(value).length !== 5) return null;
  if (typeof kid !== 'string' || typeof nonce !== 'string' || typeof ct !== 'string') return null;
  return { v, alg, kid, nonce, ct };
}

function seal(key: ScopeKey, plaintext: Uint8Array, aad: string, nonce: Uint8Array): Envelope {
  const ct = xchachaSeal(key.key, nonce, Buffer.from(aad, 'utf8'), plaintext);
  // Members in canonical order, so hashing the op need not sort them.
  return {
    alg: ENVELOPE_ALG,
    ct: ct.toString('base64url'),
    kid: key.kid,
    nonce: Buffer.from(nonce).toString('base64url'),
    v: ENVELOPE_VERSION,
  };
}

function open(key: ScopeKey, envelope: Envelope, aad: string): Uint8Array | null {
  const nonce = Buffer.from(envelope.nonce, 'base64url');
  if (nonce.length !== 24) return null;
  return xchachaOpen(key.key, nonce, Buffer.from(aad, 'utf8'), Buffer.from(envelope.ct, 'base64url'));
}

function opAad(binding: OpBinding): string {
  return canonicalize({ device_id: binding.device_id, scope: binding.scope, seq: binding.seq, surface: binding.surface });
}
