import { createCipheriv, createDecipheriv } from 'node:crypto';
import { hchacha } from '@noble/ciphers/chacha.js';

/**
 * XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha): HChaCha20 from `@noble/ciphers` derives a
 * subkey from the key and the first 16 nonce bytes, and OpenSSL's ChaCha20-Poly1305 (RFC 8439)
 * seals under it with the nonce `0000 ‖ nonce[16..24)`. Byte for byte what noble's
 * `xchacha20poly1305` produces (a property test checks both directions), at well under half
 * its cost for op-sized payloads: sealing runs once per append, on the busiest thread.
 */
const TAG_BYTES = 16;

/** "expand 32-byte k" as four little-endian words. */
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

export function xchachaSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', subkey(key, nonce), innerNonce(nonce), { authTagLength: TAG_BYTES });
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  return Buffer.concat([head, tail, cipher.getAuthTag()]);
}

/** The plaintext, or null when the ciphertext, nonce, key or AAD do not match. */
export function xchachaOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Buffer | null {
  if (sealed.length < TAG_BYTES) return null;
  const body = sealed.subarray(0, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv('chacha20-poly1305', subkey(key, nonce), innerNonce(nonce), { authTagLength: TAG_BYTES });
  decipher.setAAD(aad, { plaintextLength: body.length });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const head = decipher.update(body);
  try {
    return Buffer.concat([head, decipher.final()]);
  } catch {
    return null;
  }
}

function subkey(key: Uint8Array, nonce: Uint8Array): Uint8Array {
  if (key.length !== 32 || nonce.length !== 24) throw new RangeError('XChaCha20-Poly1305 takes a 32-byte key and a 24-byte nonce');
  const out = new Uint32Array(8);
  hchacha(SIGMA, words(key, 8), words(nonce.subarray(0, 16), 4), out);
  return new Uint8Array(out.buffer);
}

function innerNonce(nonce: Uint8Array): Uint8Array {
  const inner = new Uint8Array(12);
  inner.set(nonce.subarray(16, 24), 4);
  return inner;
}

/** Little-endian 32-bit words of `bytes` (copied: the bytes may sit at any offset). */
function words(bytes: Uint8Array, count: number): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = view.getUint32(4 * i, true);
  return out;
}
