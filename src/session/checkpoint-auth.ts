import { createHmac, timingSafeEqual } from 'node:crypto';
import { parseCheckpointHeader, unsignedHeaderJson, type CheckpointHeader, type ChunkDigest } from '../checkpoint/checkpoint.js';
import { canonicalize } from '../oplog/canonical.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { DeviceId } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { scopeFromKey, scopeKey } from '../oplog/scope.js';
import type { CheckpointHeaderJson } from '../../relay/port/relay.js';
import { derivedKey, HEADER_MAC_LABEL, keyedChunkDigest } from '../crypto/chunk-digest.js';
import type { DeviceKey } from '../crypto/device-key.js';
import type { Keyring } from '../crypto/keyring.js';
import type { ScopeKey } from '../crypto/scope-key.js';

/**
 * Checkpoint authentication, format version 2 (proposals/checkpoint.md §Authentication). The
 * relay holds no key, so a header it serves proves itself:
 * - every chunk digest is an HMAC-SHA256 under a key derived from the chunk's scope key, so the
 *   relay cannot confirm a guess of a chunk's plaintext, and cannot make a digest that verifies;
 * - the whole header (frontier, state hash, chunks — through `checkpoint_hash` — and publisher) is
 *   MACed under a key derived from the personal scope key, which only member devices hold;
 * - the publisher signs the MACed header with its Ed25519 device key, so a header names who cut it.
 */

/** Digests chunks with each scope's newest key (the one that seals them). */
export function chunkDigester(keyring: Keyring): ChunkDigest {
  return (scope, text) => keyedChunkDigest(sealingKey(keyring, scope), text);
}

/** The header with its publisher's MAC and signature. */
export function signHeader(header: CheckpointHeader, keyring: Keyring, publisher: DeviceId, deviceKey: DeviceKey): CheckpointHeader {
  const key = sealingKey(keyring, 'personal');
  const body = canonicalize(unsignedHeaderJson(header, { publisher, kid: key.kid }));
  const mac = headerMac(key, body);
  const sig = deviceKey.sign(signedText(body, mac));
  return { ...header, auth: { publisher, kid: key.kid, mac, sig } };
}

/**
 * Why a header served by the relay is not to be trusted, or null when it is authentic: a version-2
 * header whose MAC verifies under a personal key this device holds and whose signature verifies
 * under its publisher's key (`publicKeyOf`, null when the publisher is unknown). A version-1
 * header carries no proof: it is used only where the device verifies the state itself.
 */
export function headerProblem(
  header: CheckpointHeader,
  keyring: Keyring,
  publicKeyOf: (device: DeviceId) => string | null,
  crypto: CoreCrypto,
): string | null {
  const { auth } = header;
  if (!auth) return 'it is a version-1 checkpoint, which carries no proof of who cut it';
  const key = keyring.byId(auth.kid);
  if (!key || scopeKey(key.scope) !== 'personal')
    return `it is authenticated with key ${auth.kid}, which is not a personal key this device holds`;
  const body = canonicalize(unsignedHeaderJson(header));
  const expected = Buffer.from(headerMac(key, body), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(auth.mac, 'hex'))) return 'its MAC does not verify: no member device cut it';
  const publicKey = publicKeyOf(auth.publisher);
  if (publicKey === null) return `its publisher ${auth.publisher} is not a known device`;
  if (!crypto.verify(publicKey, signedText(body, auth.mac), auth.sig))
    return `its signature does not verify under the key of ${auth.publisher}`;
  return null;
}

function headerMac(key: ScopeKey, body: string): string {
  return createHmac('sha256', derivedKey(key, HEADER_MAC_LABEL)).update(body).digest('hex');
}

function signedText(body: string, mac: string): string {
  return `opsync checkpoint v2\0${body}\0${mac}`;
}

function sealingKey(keyring: Keyring, scope: string): ScopeKey {
  const key = keyring.forScope(scopeFromKey(scope));
  if (!key)
    throw new OpsyncError('key_missing', `Cannot publish a checkpoint with a chunk of scope ${scope}: this device holds no key for it.`, {
      scope,
    });
  return key;
}

/**
 * Which checkpoints this device accepts from the relay: those whose header passes
 * `headerProblem`, with publishers' keys from the roster (`publicKeyOf`). Results that verified
 * are kept (a header is immutable under its hash, MAC and signature); a refusal is not, so that
 * a publisher the roster did not show yet is accepted once it does.
 */
export class CheckpointAuthority {
  private readonly accepted = new Set<string>();
  /** Headers refused for good (forged, not merely from a publisher the roster did not show yet), by the same key. */
  private readonly rejected = new Set<string>();
  /** Set when a header was refused only because its publisher was unknown: the roster may be stale. */
  unknownPublisher = false;
  /** The key id of the last header refused because this device lacks its personal key (null: none was). */
  missingKid: string | null = null;
  /** Headers refused, by hash (counted once each). */
  readonly refused = new Map<string, string>();

  constructor(
    private readonly keyring: Keyring,
    private readonly crypto: CoreCrypto,
    private readonly publicKeyOf: (device: DeviceId) => string | null,
  ) {}

  /** Why `header` is not to be trusted, or null. */
  readonly problem = (header: CheckpointHeader): string | null => {
    const key = header.auth ? `${header.checkpoint_hash}\0${header.auth.mac}\0${header.auth.sig}` : `v1\0${header.checkpoint_hash}`;
    if (this.accepted.has(key)) return null;
    const known = this.rejected.has(key) ? this.refused.get(header.checkpoint_hash) : undefined;
    if (known !== undefined) return known;
    const problem = headerProblem(header, this.keyring, this.publicKeyOf, this.crypto);
    if (problem === null) {
      this.accepted.add(key);
      return null;
    }
    const unknownPublisher = header.auth !== null && this.publicKeyOf(header.auth.publisher) === null;
    // Only a device with no personal key at all lacks the key: a header naming a key nobody holds is forged.
    const keyless = header.auth !== null && !this.keyring.forScope('personal');
    if (unknownPublisher) this.unknownPublisher = true;
    if (keyless) this.missingKid = header.auth.kid;
    // A refusal that a roster read or an imported key may change is judged again next time.
    if (!unknownPublisher && !keyless) this.rejected.add(key);
    this.refused.set(header.checkpoint_hash, problem);
    return problem;
  };

  /** The relay-side check (`HeaderCheck`): a header that does not parse is not authentic either. */
  readonly authentic = (json: CheckpointHeaderJson): boolean => {
    let header: CheckpointHeader;
    try {
      header = parseCheckpointHeader(json, this.crypto);
    } catch {
      this.refused.set(String(json.checkpoint_hash).slice(0, 80), 'its header is malformed');
      return false;
    }
    return this.problem(header) === null;
  };
}
