import { randomFillSync } from 'node:crypto';
import { closeSync, fdatasyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { generateDeviceKey } from '../../src/crypto/device-key.js';
import { createNodeCoreCrypto } from '../../src/crypto/node-core-crypto.js';
import { chainFunction, nonceSource } from '../../src/crypto/op-minter.js';
import { scopeKeyFromBytes } from '../../src/crypto/scope-key.js';
import { canonicalize } from '../../src/oplog/canonical.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import type { Row } from './bench-table.js';
import { payloadFor } from './workload.js';

/** The machine's raw rate of one small write followed by one fdatasync, on the file system `dir` is on. */
export function rawFdatasyncRate(dir: string, seconds = 2): Row {
  const path = join(dir, 'fdatasync-ceiling');
  const fd = openSync(path, 'a');
  const line = Buffer.alloc(512, 0x61);
  const rate = timedRate(seconds, () => {
    writeSync(fd, line);
    fdatasyncSync(fd);
  });
  closeSync(fd);
  rmSync(path);
  return {
    name: 'ceiling.fdatasync',
    value: Math.round(rate),
    unit: 'syncs/s',
    target: 'reference',
    note: 'one 512 B write + one fdatasync, single writer',
  };
}

/** The machine's raw Ed25519 signing rate on one core (every append signs its op once). */
export function rawSignRate(seconds = 1): Row {
  const key = generateDeviceKey();
  const message = `op-${'0'.repeat(64)}`;
  const rate = timedRate(seconds, () => key.sign(message));
  return {
    name: 'ceiling.ed25519_sign',
    value: Math.round(rate),
    unit: 'signs/s',
    target: 'reference',
    note: 'one core, node:crypto (OpenSSL); every append signs its op id once',
  };
}

/**
 * The machine's rate of minting the benchmark's ops on one core: seal the payload, hash the
 * canonical body, sign the op id — the work an append cannot skip, whatever carries it (the
 * daemon does it on its minting worker, with the same functions).
 */
export function rawMintRate(seconds = 1): Row {
  const device = parseDeviceId('bench-mint');
  const deviceKey = generateDeviceKey();
  const scopeKey = scopeKeyFromBytes('personal', randomFillSync(new Uint8Array(32)));
  const chain = chainFunction(device, () => scopeKey, null, createNodeCoreCrypto(), nonceSource());
  const payloads = Array.from({ length: 1_000 }, (_, i) => {
    const [surface, payload] = payloadFor(i);
    return { surface, plainText: canonicalize(payload) };
  });
  const rate = timedRate(seconds, (i) => {
    const { body } = chain({
      ...payloads[i % payloads.length]!,
      seq: i,
      hlc: { wall_ms: i + 1, counter: 0, device_id: device },
      scope: 'personal',
    });
    deviceKey.sign(body.op_id);
  });
  return {
    name: 'ceiling.op_mint',
    value: Math.round(rate),
    unit: 'ops/s',
    target: 'reference',
    note: "one core: seal (XChaCha20-Poly1305) + canonical hash (SHA-256) + Ed25519 signature of the appends' ops",
  };
}

/** Runs `step` (given its index) for `seconds` on this thread; its rate per second. */
function timedRate(seconds: number, step: (i: number) => void): number {
  const start = performance.now();
  let count = 0;
  while (performance.now() - start < seconds * 1000) step(count++);
  return count / ((performance.now() - start) / 1000);
}
