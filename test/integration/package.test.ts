import { execFile, spawn } from 'node:child_process';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'plist';
import { beforeAll, describe, expect, it } from 'vitest';
import { running } from '../helpers/running-daemons.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs('file');

function run(command: string, args: readonly string[], cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, timeout: 300_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

async function ok(command: string, args: readonly string[], cwd?: string): Promise<string> {
  const result = await run(command, args, cwd);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.code}):\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/**
 * The package as `npm run package` makes it, from a build of its own (tsconfig.build.json, in a
 * fresh folder: nothing left over from other builds), installed into a temporary prefix as a user
 * installs it (`npm install --global --prefix`).
 */
let packed: { files: string[]; bin: string; tarball: string };

beforeAll(async () => {
  const stage = await tempDir();
  await ok(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--outDir', join(stage, 'dist')]);
  for (const file of ['package.json', 'README.md', 'LICENSE']) await copyFile(file, join(stage, file));
  const [report] = JSON.parse(await ok('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', stage], stage)) as Array<{
    filename: string;
    files: Array<{ path: string }>;
  }>;
  const prefix = await tempDir();
  // The dependencies come from npm's cache (npm ci filled it), the registry only for what it lacks.
  await ok('npm', [
    'install',
    '--global',
    '--prefix',
    prefix,
    '--prefer-offline',
    '--no-audit',
    '--no-fund',
    join(stage, report!.filename),
  ]);
  packed = { files: report!.files.map((file) => file.path), bin: join(prefix, 'bin', 'opsync'), tarball: join(stage, report!.filename) };
}, 600_000);

describe('the package', () => {
  it('ships only what runs: the built daemon and relays, README, LICENSE and package.json', async () => {
    for (const path of packed.files) expect(path).toMatch(/^(dist\/(src|relay)\/.+\.(js|d\.ts)|README\.md|LICENSE|package\.json)$/);
    for (const needed of ['dist/src/cli/main.js', 'dist/src/journal/digest-worker.js', 'dist/relay/postgres/postgres-relay.js', 'LICENSE'])
      expect(packed.files).toContain(needed);
    const manifest = JSON.parse(await readFile('package.json', 'utf8')) as { license: string };
    expect(manifest.license).toBe('MIT');
    expect(await readFile('LICENSE', 'utf8')).toMatch(/^MIT License/);
  });

  it('starts a daemon, takes a call and stops, installed from the tarball', async () => {
    const [dataDir, relay] = [await tempDir(), await tempDir()];
    const flags = ['--data-dir', dataDir];
    const daemon = spawn(packed.bin, ['start', ...flags, '--relay', relay, '--listen', '127.0.0.1:0'], { stdio: 'ignore' });
    running.add(daemon);
    const exited = new Promise<number | null>((resolve) => daemon.once('exit', (code) => (running.delete(daemon), resolve(code))));
    expect((await run(packed.bin, ['wait', ...flags, '--timeout-ms', '60000'])).code).toBe(0);
    const answer = await ok(packed.bin, ['call', ...flags, 'sync.append', '{"surface":"knowledge","payload":{"id":"packed"}}']);
    expect(JSON.parse(answer)).toMatchObject({ seq: 0 });
    expect((await run(packed.bin, ['--version'])).stdout.trim()).toBe(
      (JSON.parse(await readFile('package.json', 'utf8')) as { version: string }).version,
    );
    // A host of its own, with the package as a dependency, reaches the daemon through `opsync/client`.
    const host = await tempDir();
    await writeFile(join(host, 'package.json'), JSON.stringify({ name: 'host', private: true, type: 'module' }));
    await ok('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', packed.tarball], host);
    await writeFile(
      join(host, 'host.js'),
      `import { fromDataDir } from 'opsync/client';
const client = await fromDataDir(process.argv[2]);
const { seq } = await client.sync.append({ surface: 'knowledge', payload: { id: 'from-a-host' } });
const { counts } = await client.sync.status();
console.log(JSON.stringify({ seq, records: counts.records }));
client.close();`,
    );
    expect(JSON.parse(await ok(process.execPath, [join(host, 'host.js'), dataDir]))).toEqual({ seq: 1, records: 2 });
    // And its test suite starts daemons of its own through `opsync/testing`.
    await writeFile(
      join(host, 'suite.js'),
      `import { startDaemons } from 'opsync/testing';
const cluster = await startDaemons(2);
const [a, b] = await Promise.all(cluster.daemons.map((daemon) => daemon.client()));
await a.sync.append({ surface: 'skill', payload: { id: 'in-a-suite' } });
await a.sync.pump();
await b.sync.pump();
const { records } = await b.sync.records({ surface: 'skill' });
await cluster.stop();
console.log(JSON.stringify(records.map((record) => record.key)));`,
    );
    expect(JSON.parse(await ok(process.execPath, [join(host, 'suite.js')]))).toEqual(['in-a-suite']);
    expect((await run(packed.bin, ['stop', ...flags])).code).toBe(0);
    expect(await exited).toBe(0);
  });
});

describe('the service examples', () => {
  it('gives systemd a user unit that systemd-analyze verifies, running the installed opsync', async () => {
    const unit = await readFile('examples/opsync.service', 'utf8');
    expect(unit).toMatch(/^ExecStart=%h\/\.local\/bin\/opsync start$/m);
    // Verified as installed: ExecStart naming the opsync this test installed (verify checks it can run).
    const dir = await tempDir();
    await writeFile(join(dir, 'opsync.service'), unit.replaceAll('%h/.local/bin/opsync', packed.bin));
    const verified = await run('systemd-analyze', ['verify', join(dir, 'opsync.service')]);
    expect(verified.stderr).toBe('');
    expect(verified.code).toBe(0);
  });

  it('gives launchd a property list that parses, runs opsync start and keeps it alive', async () => {
    const agent = parse(await readFile('examples/dev.opsync.daemon.plist', 'utf8')) as Record<string, unknown>;
    expect(agent).toMatchObject({
      Label: 'dev.opsync.daemon',
      ProgramArguments: ['/usr/local/bin/opsync', 'start'],
      RunAtLoad: true,
      KeepAlive: { SuccessfulExit: false },
    });
    expect(agent.StandardOutPath).toMatch(/^\//);
  });
});
