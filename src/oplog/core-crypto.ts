/**
 * The two primitives the pure core needs, injected so that the core imports no Node module.
 * src/crypto/node-core-crypto.ts implements them with node:crypto (native SHA-256 is about three
 * times faster than a JS one, and reopening a journal hashes every op).
 */
export interface CoreCrypto {
  /** Lowercase hex SHA-256 of the UTF-8 bytes of `text`. */
  sha256Hex(text: string): string;
  /**
   * Ed25519 verification. `publicKey` is the raw 32-byte key and `signature` the 64-byte
   * signature, both base64url without padding; `message` is signed as its UTF-8 bytes.
   * Malformed keys or signatures verify as false.
   */
  verify(publicKey: string, message: string, signature: string): boolean;
}
