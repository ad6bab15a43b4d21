/**
 * Child for the durable-write tests: runs under a small `ulimit -f`, so that each write below
 * fails as a full disk would (EFBIG, a real error of the OS), and prints what each write threw
 * and what it left in the folder given on the command line.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileDurable, writeFileAtomic, writeFileDurable } from '../../src/platform/durable-fs.js';

const dir = process.argv[2]!;
const big = 'x'.repeat(1024 * 1024);
const writes = {
  writeFileDurable: () => writeFileDurable(join(dir, 'durable.json'), big),
  writeFileAtomic: () => writeFileAtomic(join(dir, 'atomic.json'), big),
  createFileDurable: () => createFileDurable(join(dir, 'created.json'), big),
};
const errors: Record<string, string> = {};
for (const [name, write] of Object.entries(writes)) {
  await write().then(
    () => (errors[name] = 'none'),
    (error: NodeJS.ErrnoException) => (errors[name] = error.code ?? error.message),
  );
}
process.stdout.write(JSON.stringify({ errors, left: await readdir(dir) }) + '\n');
