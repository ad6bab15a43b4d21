import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach } from 'vitest';

/**
 * A fresh temporary directory per call, removed after the test — or, with `'file'`, after the
 * last test of the file (for directories made in `beforeAll`).
 */
export function useTempDirs(lifetime: 'test' | 'file' = 'test'): () => Promise<string> {
  const made: string[] = [];
  (lifetime === 'test' ? afterEach : afterAll)(async () => {
    await Promise.all(made.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
  });
  return async () => {
    const dir = await mkdtemp(join(tmpdir(), 'opsync-test-'));
    made.push(dir);
    return dir;
  };
}
