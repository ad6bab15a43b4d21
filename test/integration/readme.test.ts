import { execFile } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

function bash(script: string, env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-euo', 'pipefail', '-c', script], { cwd: process.cwd(), env, timeout: 180_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

/** Stops any daemon a failed script left running under `root`. */
async function killLeftovers(root: string): Promise<void> {
  for (const entry of await readdir(root, { recursive: true })) {
    if (!entry.endsWith('daemon.json')) continue;
    try {
      process.kill((JSON.parse(await readFile(join(root, entry), 'utf8')) as { pid: number }).pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

describe('README', () => {
  it('the two-device walk-through runs as written and the devices agree', async () => {
    const readme = await readFile('README.md', 'utf8');
    const block = /```sh walkthrough\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block, 'README.md has a walkthrough block').toBeDefined();
    const tmp = await tempDir();
    try {
      const result = await bash(block!, { ...process.env, TMPDIR: tmp });
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toContain('hello from the laptop');
      const hashes = [...result.stdout.matchAll(/"state_hash": "(sh-[0-9a-f]{64})"/g)].map((m) => m[1]);
      expect(hashes.length).toBeGreaterThanOrEqual(2);
      expect(hashes.at(-1)).toBe(hashes.at(-2));
      expect(result.stdout).toMatch(/^peers\n {2}\S+ +active/m);
    } finally {
      await killLeftovers(tmp);
    }
  });

  it("the quick start's `npm start` runs a daemon on the defaults", async () => {
    const readme = await readFile('README.md', 'utf8');
    expect(readme).toContain('npm ci && npm start');
    const home = await tempDir();
    const env = { ...process.env, XDG_DATA_HOME: home };
    try {
      const result = await bash(
        'npm start > "$XDG_DATA_HOME/start.log" 2>&1 & npx opsync wait && npx opsync status && npx opsync stop',
        env,
      );
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/^device +\S+ +\(ws:\/\/127\.0\.0\.1:7420\)/m);
      expect(await readFile(join(home, 'start.log'), 'utf8')).toContain('opsync listening on ws://127.0.0.1:7420');
    } finally {
      await killLeftovers(home);
    }
  });

  it('the RPC table names exactly the methods a daemon serves (rpc.discover)', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    try {
      const client = await daemon.connect();
      const { methods } = await client.call<{ methods: Array<{ name: string }> }>('rpc.discover');
      await client.close();
      const readme = await readFile('README.md', 'utf8');
      const table = readme.slice(readme.indexOf('## RPC methods'), readme.indexOf('\n## ', readme.indexOf('## RPC methods') + 1));
      const documented = new Set(
        [...table.matchAll(/^\| `([a-z_.]+)`(?: \/ `([a-z_.]+)`)?/gm)].flatMap((m) =>
          [m[1]!, m[2]].filter((x): x is string => x !== undefined),
        ),
      );
      expect([...documented].sort()).toEqual(methods.map((m) => m.name).sort());
    } finally {
      await daemon.stop();
    }
  });
});
