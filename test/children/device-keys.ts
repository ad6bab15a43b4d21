/**
 * Child: generates device keys in a loop, with short-lived garbage beside them so that
 * collections run while keys are exported, and prints how many keys it made and how many of the
 * first hundred were distinct.
 */
import { generateDeviceKey } from '../../src/crypto/device-key.js';

const count = Number(process.argv[2]);
const first = new Set<string>();
const junk: string[] = [];
for (let i = 0; i < count; i++) {
  const key = generateDeviceKey();
  if (i < 100) first.add(key.publicKey);
  junk.push('x'.repeat(100));
  if (junk.length > 1000) junk.length = 0;
}
process.stdout.write(JSON.stringify({ made: count, distinct_of_first_100: first.size }) + '\n');
