import { createHash } from 'node:crypto';
import { scryptAsync } from '@noble/hashes/scrypt.js';
import { OpsyncError } from '../util/opsync-error.js';
import { parseScope, scopeKey, type Scope } from '../oplog/scope.js';
import { isJsonObject } from '../util/json.js';

/**
 * A 256-bit symmetric key for one scope. `kid` names the key without revealing it, so an
 * envelope says which key opens it and a device can report exactly which key it lacks.
 */
export interface ScopeKey {
  readonly scope: Scope;
  readonly kid: string;
  readonly key: Uint8Array;
}

export const KEY_FILE_VERSION = 1;

/**
 * scrypt cost for passphrase keys: N = 2^15, r = 8, p = 1 (32 MiB, ~100 ms here), the
 * parameters RFC 7914 and OWASP give for interactive logins. The salt is bound to the scope so
 * one passphrase yields unrelated keys for different scopes.
 */
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, dkLen: 32 } as const;

export function scopeKeyFromBytes(scope: Scope, key: Uint8Array): ScopeKey {
  if (key.length !== 32) throw new OpsyncError('key_invalid', `A scope key must be 32 bytes, got ${key.length}.`);
  const kid = 'k-' + createHash('sha256').update('opsync key id v1\0').update(key).digest('hex').slice(0, 16);
  return { scope, kid, key: Uint8Array.from(key) };
}

export async function scopeKeyFromPassphrase(scope: Scope, passphrase: string): Promise<ScopeKey> {
  if (passphrase.length < 8) {
    throw new OpsyncError('key_invalid', 'A passphrase must be at least 8 characters long.');
  }
  const key = await scryptAsync(passphrase, `opsync/v1/scope/${scopeKey(scope)}`, SCRYPT);
  return scopeKeyFromBytes(scope, key);
}

/** The key file (and export) format: one JSON object with the scope and the key in base64url. */
export function encodeKeyFile(key: ScopeKey): string {
  return (
    JSON.stringify({
      opsync_key: KEY_FILE_VERSION,
      scope: key.scope,
      kid: key.kid,
      key: Buffer.from(key.key).toString('base64url'),
    }) + '\n'
  );
}

export function parseKeyFile(text: string, source: string): ScopeKey {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw badKey(source, 'it is not JSON');
  }
  if (!isJsonObject(json) || json.opsync_key !== KEY_FILE_VERSION || typeof json.key !== 'string') {
    throw badKey(source, `it is not an opsync key of version ${KEY_FILE_VERSION}`);
  }
  const scope = parseScope(json.scope, `scope in ${source}`);
  const key = scopeKeyFromBytes(scope, Buffer.from(json.key, 'base64url'));
  if (json.kid !== undefined && json.kid !== key.kid) throw badKey(source, 'its kid does not match its key');
  return key;
}

function badKey(source: string, reason: string): OpsyncError {
  return new OpsyncError('key_invalid', `The key in ${source} cannot be used: ${reason}.`, { source });
}
