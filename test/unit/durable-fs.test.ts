import { execFile } from 'node:child_process';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureDir } from '../../src/platform/durable-fs.js';
import { childScript } from '../helpers/children.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

describe('durable writes that fail (a full disk)', () => {
  it('leave neither the target nor a temporary file behind, so retries on a full disk do not pile up files', async () => {
    const dir = await tempDir();
    // A real failure of the OS: the file size limit makes each write fail as ENOSPC would.
    const script = `trap '' XFSZ; ulimit -f 64; exec "${process.execPath}" "${childScript('durable-writes')}" "${dir}"`;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile('sh', ['-c', script], { timeout: 60_000 }, (error, out, stderr) =>
        error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(out),
      );
    });
    const { errors, left } = JSON.parse(stdout) as { errors: Record<string, string>; left: string[] };
    expect(errors).toEqual({ writeFileDurable: 'EFBIG', writeFileAtomic: 'EFBIG', createFileDurable: 'EFBIG' });
    expect(left).toEqual([]);
  });
});

describe('ensureDir', () => {
  it('creates missing parents, accepts a folder that exists, and refuses a file in its place', async () => {
    const root = await tempDir();
    await ensureDir(join(root, 'a', 'b', 'c'));
    await ensureDir(join(root, 'a', 'b', 'c'));
    expect((await stat(join(root, 'a', 'b', 'c'))).isDirectory()).toBe(true);
    await writeFile(join(root, 'file'), '');
    await expect(ensureDir(join(root, 'file'))).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(ensureDir(join(root, 'file', 'x'))).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  it('fails, instead of retrying forever, where a folder exists but cannot hold folders', async () => {
    await expect(ensureDir('/proc/self/opsync-test/x')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('lets concurrent calls create the same folders', async () => {
    const root = await tempDir();
    await Promise.all(Array.from({ length: 8 }, () => ensureDir(join(root, 'x', 'y', 'z'))));
    expect((await stat(join(root, 'x', 'y', 'z'))).isDirectory()).toBe(true);
  });
});
