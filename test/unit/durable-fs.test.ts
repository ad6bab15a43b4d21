import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { childScript } from '../helpers/children.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

describe('durable writes that fail (a full disk)', () => {
  it('leave neither the target nor a temporary file behind, so retries on a full disk do not pile up files', async () => {
    const dir = await tempDir();
    // A real failure of the OS: the file size limit makes each write fail as ENOSPC would.
    const script = `trap '' XFSZ; ulimit -f 64; exec "${process.execPath}" "${childScript('durable-writes')}" "${dir}"`;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile('sh', ['-c', script], { timeout: 60_000 }, (error, out, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(out)));
    });
    const { errors, left } = JSON.parse(stdout) as { errors: Record<string, string>; left: string[] };
    expect(errors).toEqual({ writeFileDurable: 'EFBIG', writeFileAtomic: 'EFBIG', createFileDurable: 'EFBIG' });
    expect(left).toEqual([]);
  });
});
