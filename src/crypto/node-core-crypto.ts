import { createHash, createPublicKey, verify as edVerify, type KeyObject } from 'node:crypto';
import type { CoreCrypto } from '../oplog/core-crypto.js';

/** CoreCrypto on node:crypto: native SHA-256 and OpenSSL Ed25519, with parsed public keys cached. */
export function createNodeCoreCrypto(): CoreCrypto {
  const keys = new Map<string, KeyObject | null>();
  const keyObject = (publicKey: string): KeyObject | null => {
    let key = keys.get(publicKey);
    if (key === undefined) {
      key = parsePublicKey(publicKey);
      keys.set(publicKey, key);
    }
    return key;
  };
  return {
    sha256Hex: (text) => createHash('sha256').update(text, 'utf8').digest('hex'),
    verify(publicKey, message, signature) {
      const key = keyObject(publicKey);
      const sig = Buffer.from(signature, 'base64url');
      if (key === null || sig.length !== 64) return false;
      return edVerify(null, Buffer.from(message, 'utf8'), key, sig);
    },
  };
}

function parsePublicKey(publicKey: string): KeyObject | null {
  if (Buffer.from(publicKey, 'base64url').length !== 32) return null;
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: publicKey }, format: 'jwk' });
  } catch {
    return null;
  }
}
