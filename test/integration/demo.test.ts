import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

describe('npm run demo', () => {
  it('walks through sync, a lease handoff and a resumed conversation, and ends with equal state hashes', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [join(process.cwd(), 'dist', 'test', 'demo', 'demo.js')], {
      timeout: 120_000,
    });
    expect(stdout).toMatch(
      /desktop sync\.fence_check run nightly-42 \(it must not run it again\): \{"decision":\{"decision":"already_committed"/,
    );
    expect(stdout).toMatch(/desktop lease\.acquire: \{[^}]*"epoch":2/);
    expect(stdout).toContain('"tool_use_id": "toolu_01"');
    const hashes = [...stdout.matchAll(/(?:laptop |desktop): \{"state_hash":"(sh-[0-9a-f]+)"/g)].map((m) => m[1]);
    expect(hashes).toHaveLength(2);
    expect(hashes[0]).toBe(hashes[1]);
  });
});
