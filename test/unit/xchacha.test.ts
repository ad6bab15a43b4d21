import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { xchachaOpen, xchachaSeal } from '../../src/crypto/xchacha.js';

const key = fc.uint8Array({ minLength: 32, maxLength: 32 });
const nonce = fc.uint8Array({ minLength: 24, maxLength: 24 });
const bytes = fc.uint8Array({ maxLength: 600 });

/** Inputs at any offset of a larger buffer, as Buffer slices of a pool arrive. */
const offset = (arb: fc.Arbitrary<Uint8Array>) =>
  fc.tuple(arb, fc.nat(7)).map(([b, at]) => Uint8Array.from([...new Uint8Array(at), ...b]).subarray(at));

describe('XChaCha20-Poly1305 (HChaCha20 from noble, AEAD from OpenSSL)', () => {
  it('seals byte for byte as noble xchacha20poly1305 does, and each opens the other', () => {
    fc.assert(
      fc.property(offset(key), offset(nonce), bytes, offset(bytes), (k, n, aad, plain) => {
        const ours = xchachaSeal(k, n, aad, plain);
        const noble = xchacha20poly1305(k, n, aad).encrypt(plain);
        expect(Buffer.from(ours).equals(Buffer.from(noble))).toBe(true);
        expect(Buffer.from(xchachaOpen(k, n, aad, noble)!).equals(Buffer.from(plain))).toBe(true);
        expect(Buffer.from(xchacha20poly1305(k, n, aad).decrypt(ours)).equals(Buffer.from(plain))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('matches the draft-irtf-cfrg-xchacha test vector (A.3.1)', () => {
    const hex = (text: string) => Buffer.from(text.replace(/\s/g, ''), 'hex');
    const plain = Buffer.from(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    );
    const aad = hex('50515253c0c1c2c3c4c5c6c7');
    const k = hex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
    const n = hex('404142434445464748494a4b4c4d4e4f5051525354555657');
    const sealed = xchachaSeal(k, n, aad, plain);
    expect(sealed.subarray(0, 16).toString('hex')).toBe('bd6d179d3e83d43b9576579493c0e939');
    expect(sealed.subarray(-16).toString('hex')).toBe('c0875924c1c7987947deafd8780acf49');
  });

  it('refuses any flipped bit of ciphertext, tag, nonce, key or additional data', () => {
    fc.assert(
      fc.property(key, nonce, bytes, bytes, fc.nat(), fc.constantFrom('sealed', 'nonce', 'key', 'aad'), (k, n, aad, plain, at, where) => {
        const sealed = xchachaSeal(k, n, aad, plain);
        const inputs = {
          sealed: Uint8Array.from(sealed),
          nonce: Uint8Array.from(n),
          key: Uint8Array.from(k),
          aad: Uint8Array.from([...aad, 0]),
        };
        const target = inputs[where];
        target[at % target.length]! ^= 1 << (at % 8);
        expect(xchachaOpen(inputs.key, inputs.nonce, where === 'aad' ? inputs.aad : aad, inputs.sealed)).toBeNull();
      }),
      { numRuns: 300 },
    );
  });

  it('refuses a ciphertext shorter than its tag', () => {
    expect(xchachaOpen(new Uint8Array(32), new Uint8Array(24), new Uint8Array(0), new Uint8Array(15))).toBeNull();
  });
});
