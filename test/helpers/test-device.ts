import { sign, type KeyObject } from 'node:crypto';
import { ed25519FromSeed } from '../../src/crypto/device-key.js';
import { createNodeCoreCrypto } from '../../src/crypto/node-core-crypto.js';
import { HlcClock } from '../../src/oplog/hlc.js';
import { parseDeviceId, type DeviceId } from '../../src/oplog/ids.js';
import { opIdOf, type ChainHead, type OpRecord } from '../../src/oplog/op-record.js';
import type { Scope } from '../../src/oplog/scope.js';
import type { Surface } from '../../src/oplog/surface.js';
import type { JsonObject } from '../../src/util/json.js';

export const coreCrypto = createNodeCoreCrypto();

/** An Ed25519 key from a fixed 32-byte seed, so fixtures and simulations are reproducible. */
export function keyFromSeed(seed: number): { privateKey: KeyObject; publicKey: string } {
  const privateKey = ed25519FromSeed(Buffer.alloc(32, seed));
  return { privateKey, publicKey: String(privateKey.export({ format: 'jwk' }).x) };
}

export function signSync(privateKey: KeyObject, message: string): string {
  return sign(null, Buffer.from(message, 'utf8'), privateKey).toString('base64url');
}

/**
 * A device that mints valid, signed ops synchronously with a controllable clock. Payloads are
 * used as given (plaintext), which is what the fold and chain layers see.
 */
export class TestDevice {
  readonly id: DeviceId;
  readonly publicKey: string;
  readonly clock: HlcClock;
  head: ChainHead | null = null;
  private readonly privateKey: KeyObject;

  constructor(id: string, seed: number, now: () => number = () => 1_700_000_000_000) {
    this.id = parseDeviceId(id);
    const key = keyFromSeed(seed);
    this.privateKey = key.privateKey;
    this.publicKey = key.publicKey;
    this.clock = new HlcClock(this.id, now);
  }

  op(surface: Surface, payload: JsonObject, scope: Scope = 'personal'): OpRecord {
    const body = {
      device_id: this.id,
      seq: this.head ? this.head.seq + 1 : 0,
      prev: this.head?.op_id ?? null,
      hlc: this.clock.tick(),
      scope,
      surface,
      payload,
    };
    const op_id = opIdOf(body, coreCrypto);
    const op: OpRecord = { op_id, ...body, sig: signSync(this.privateKey, op_id) };
    this.head = { seq: op.seq, op_id, hlc: op.hlc };
    return op;
  }

  /** Re-signs an op (after a test tampered with it) with this device's key. */
  resign(op: OpRecord): OpRecord {
    return { ...op, sig: signSync(this.privateKey, op.op_id) };
  }
}
