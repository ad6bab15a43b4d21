import { createPrivateKey, randomBytes, sign as edSign, type KeyObject } from 'node:crypto';
import { OpsyncError } from '../util/opsync-error.js';
import { isJsonObject } from '../util/json.js';

/**
 * The device's Ed25519 signing key. Its public half is registered with the relay before the
 * first push (trust on first use); every op_id this device mints is signed with it.
 */
export interface DeviceKey {
  /** Raw 32-byte public key, base64url. */
  readonly publicKey: string;
  /** Ed25519 signature (base64url) over the UTF-8 bytes of `message`. */
  sign(message: string): string;
  /** The key file text (mode 0600 on disk); contains the private key. */
  toFileText(): string;
}

export const DEVICE_KEY_FILE_VERSION = 1;

/** The PKCS#8 DER encoding of an Ed25519 private key up to its 32-byte seed (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/**
 * A new device key from 32 random bytes. Not `generateKeyPairSync`: on Node 20, a garbage
 * collection while a key it made is exported destroys the generation job, which locks the
 * mutex the export holds, and the process hangs for good (one start in a few thousand; a loop of
 * key generations hangs within seconds). An imported seed is the same kind of key, without a job.
 */
export function generateDeviceKey(): DeviceKey {
  return fromPrivateKey(ed25519FromSeed(randomBytes(32)));
}

/** The Ed25519 private key whose 32-byte seed is `seed`. */
export function ed25519FromSeed(seed: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

export function parseDeviceKeyFile(text: string, file: string): DeviceKey {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw badKeyFile(file, 'it is not JSON');
  }
  if (!isJsonObject(json) || json.opsync_device_key !== DEVICE_KEY_FILE_VERSION || typeof json.private_key !== 'string') {
    throw badKeyFile(file, `it is not an opsync device key file of version ${DEVICE_KEY_FILE_VERSION}`);
  }
  try {
    const privateKey = createPrivateKey({
      key: { kty: 'OKP', crv: 'Ed25519', d: json.private_key, x: typeof json.public_key === 'string' ? json.public_key : '' },
      format: 'jwk',
    });
    return fromPrivateKey(privateKey);
  } catch {
    throw badKeyFile(file, 'its key does not parse as an Ed25519 key pair');
  }
}

function fromPrivateKey(privateKey: KeyObject): DeviceKey {
  const jwk = privateKey.export({ format: 'jwk' });
  const publicKey = String(jwk.x);
  return {
    publicKey,
    sign: (message) => edSign(null, Buffer.from(message, 'utf8'), privateKey).toString('base64url'),
    toFileText: () => JSON.stringify({ opsync_device_key: DEVICE_KEY_FILE_VERSION, public_key: publicKey, private_key: jwk.d }) + '\n',
  };
}

function badKeyFile(file: string, reason: string): OpsyncError {
  return new OpsyncError('key_invalid', `The device key file ${file} cannot be used: ${reason}.`, { file });
}
