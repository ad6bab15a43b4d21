import { execFile } from 'node:child_process';
import { verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateDeviceKey, parseDeviceKeyFile } from '../../src/crypto/device-key.js';
import { childScript } from '../helpers/children.js';

describe('device keys', () => {
  it('sign what the registered public key verifies, also after a round trip through the key file', () => {
    const key = generateDeviceKey();
    const again = parseDeviceKeyFile(key.toFileText(), 'device-key.json');
    expect(again.publicKey).toBe(key.publicKey);
    const publicKey = { key: { kty: 'OKP', crv: 'Ed25519', x: key.publicKey }, format: 'jwk' } as const;
    expect(verify(null, Buffer.from('op-123'), publicKey, Buffer.from(again.sign('op-123'), 'base64url'))).toBe(true);
  });

  it('are made without ever hanging the process (Node 20 deadlocks exporting a key generateKeyPairSync made)', async () => {
    // With generateKeyPairSync, this loop hung for good in 5 runs of 5 (at normal speed it takes ~1 s).
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [childScript('device-keys'), '40000'], { timeout: 180_000 }, (error, out, stderr) =>
        error ? reject(new Error(`the key generator did not finish: ${error.message}\n${stderr}`)) : resolve(out),
      );
    });
    expect(JSON.parse(stdout)).toEqual({ made: 40_000, distinct_of_first_100: 100 });
  });
});
