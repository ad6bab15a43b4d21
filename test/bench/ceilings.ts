import { closeSync, fdatasyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { generateDeviceKey } from '../../src/crypto/device-key.js';
import type { Row } from './bench-table.js';

/** The machine's raw rate of one small write followed by one fdatasync, on the file system `dir` is on. */
export function rawFdatasyncRate(dir: string, seconds = 2): Row {
  const path = join(dir, 'fdatasync-ceiling');
  const fd = openSync(path, 'a');
  const line = Buffer.alloc(512, 0x61);
  const start = performance.now();
  let count = 0;
  while (performance.now() - start < seconds * 1000) {
    writeSync(fd, line);
    fdatasyncSync(fd);
    count++;
  }
  const rate = count / ((performance.now() - start) / 1000);
  closeSync(fd);
  rmSync(path);
  return { name: 'ceiling.fdatasync', value: Math.round(rate), unit: 'syncs/s', target: 'reference', note: 'one 512 B write + one fdatasync, single writer' };
}

/** The machine's raw Ed25519 signing rate on one core (every append signs its op once). */
export function rawSignRate(seconds = 1): Row {
  const key = generateDeviceKey();
  const message = `op-${'0'.repeat(64)}`;
  const start = performance.now();
  let count = 0;
  while (performance.now() - start < seconds * 1000) {
    key.sign(message);
    count++;
  }
  const rate = count / ((performance.now() - start) / 1000);
  return { name: 'ceiling.ed25519_sign', value: Math.round(rate), unit: 'signs/s', target: 'reference', note: 'one core, node:crypto (OpenSSL); every append signs its op id once' };
}
