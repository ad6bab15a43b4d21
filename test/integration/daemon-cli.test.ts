import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RpcCallError } from '../../src/rpc/rpc-client.js';
import { cli, DaemonProcess } from '../helpers/daemon-process.js';
import { runningProcess } from '../helpers/processes.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

function run(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli(), ...args], { env, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

/** One clear sentence: a single line on stderr, starting with "opsync: ". */
function oneSentence(stderr: string): string {
  const lines = stderr.trim().split('\n');
  expect(lines[0]).toMatch(/^opsync: /);
  return lines[0]!;
}

describe('the opsync command has the usual manners', () => {
  it('prints its version, lists every command, and names every flag of a command with its environment variable', async () => {
    const pkg = JSON.parse(await readFile(join(process.cwd(), 'package.json'), 'utf8')) as { version: string };
    for (const args of [['--version'], ['version']]) expect(await run(args)).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
    const overview = await run(['help']);
    expect(overview.code).toBe(0);
    for (const command of ['start', 'call', 'status', 'wait', 'stop', 'key export', 'key import'])
      expect(overview.stdout).toContain(`  ${command} `);
    const flags = [
      'data-dir',
      'relay',
      'listen',
      'allow-origin',
      'device-id',
      'lease-backend',
      'lease-dir',
      'pg-url',
      'passphrase-file',
      'log-level',
      'max-skew-ms',
      'eviction-horizon-ms',
    ];
    for (const args of [
      ['help', 'start'],
      ['start', '--help'],
    ]) {
      const help = await run(args);
      expect(help.code).toBe(0);
      for (const flag of flags) expect(help.stdout).toContain(`--${flag} `);
      expect(help.stdout).toContain('(OPSYNC_EVICTION_HORIZON_MS)');
    }
    expect((await run(['stop', '-h'])).stdout).toContain('--timeout-ms MS');
  });

  it("fails a wait at once with the start's own sentence when that start failed", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const dataDir = await tempDir();
      // Launched together, as a script does; the wait would otherwise wait its whole minute.
      const [started, waited] = await Promise.all([
        run(['start', '--data-dir', dataDir, '--relay', await tempDir(), '--listen', `127.0.0.1:${port}`]),
        run(['wait', '--data-dir', dataDir, '--timeout-ms', '60000']),
      ]);
      expect(started.code).toBe(1);
      expect(waited.code).toBe(1);
      const cause = oneSentence(started.stderr).replace(/^opsync: /, '');
      // Before it: how far the start came (its journal read), then the start's own sentence.
      const lines = waited.stderr.trim().split('\n');
      expect(lines.at(-1)).toBe(`opsync: The daemon's start failed: ${cause}`);
      for (const line of lines.slice(0, -1)) expect(line).toMatch(/^opsync: reading the journal \(bytes\): \d+ of \d+ \(\d+%\)$/);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('exits 2 for a usage mistake and 1 for a failure', async () => {
    for (const args of [['nope'], [], ['start', '--nope'], ['wait', '--timeout-ms'], ['key'], ['help', 'nope']]) {
      const result = await run(args);
      expect(result.code, args.join(' ')).toBe(2);
      oneSentence(result.stderr);
    }
    const failed = await run(['start', '--data-dir', await tempDir(), '--listen', 'nowhere']);
    expect(failed.code).toBe(1);
  });

  it('takes a flag over the environment, the environment over the config file, and refuses a config file it cannot read', async () => {
    const dir = await tempDir();
    const config = join(dir, 'config.json');
    await writeFile(config, JSON.stringify({ 'data-dir': dir, listen: 'from-file' }));
    const named = async (args: string[], env: NodeJS.ProcessEnv) =>
      oneSentence((await run(['start', ...args], { ...process.env, ...env })).stderr);
    expect(await named(['--listen', 'from-flag'], { OPSYNC_CONFIG: config, OPSYNC_LISTEN: 'from-env' })).toContain('"from-flag"');
    expect(await named([], { OPSYNC_CONFIG: config, OPSYNC_LISTEN: 'from-env' })).toContain('"from-env"');
    expect(await named(['--config', config], {})).toContain('"from-file"');
    // The default config file, under XDG_CONFIG_HOME, counts as well.
    await mkdir(join(dir, 'opsync'));
    await writeFile(join(dir, 'opsync', 'config.json'), JSON.stringify({ listen: 'from-default-file', 'data-dir': dir }));
    expect(await named([], { XDG_CONFIG_HOME: dir })).toContain('"from-default-file"');
    // Hostile or mistaken files are refused by name, before anything starts.
    await writeFile(config, JSON.stringify({ 'data-dir': dir, lisen: '127.0.0.1:0' }));
    expect(await named(['--config', config], {})).toContain('names "lisen", which is no flag of opsync');
    await writeFile(config, '[1, 2]');
    expect(await named(['--config', config], {})).toContain('is not a JSON object');
    // Help and the version do not read it: they work whatever the file holds.
    expect(await run(['--version'], { ...process.env, OPSYNC_CONFIG: config })).toMatchObject({ code: 0 });
    // A link is not followed, and the sentence says so.
    await writeFile(join(dir, 'real.json'), JSON.stringify({ 'data-dir': dir }));
    await symlink(join(dir, 'real.json'), join(dir, 'linked.json'));
    expect(await named(['--config', join(dir, 'linked.json')], {})).toContain('a symbolic link is not followed');
    expect(await named(['--config', join(dir, 'missing.json')], {})).toContain('does not exist');
  });
});

describe('opsync start refuses bad configuration with one clear sentence and a non-zero exit', () => {
  it('an unknown flag', async () => {
    const result = await run(['start', '--nope']);
    expect(result.code).toBe(2);
    expect(oneSentence(result.stderr)).toContain('--nope is not an option');
  });

  it('a --timeout-ms for wait or stop that is not a number (it used to wait forever)', async () => {
    for (const command of ['wait', 'stop']) {
      const result = await run([command, '--data-dir', await tempDir(), '--timeout-ms', 'soon']);
      expect(result.code).toBe(1);
      expect(oneSentence(result.stderr)).toContain('--timeout-ms must be a positive whole number of milliseconds');
    }
  });

  it('an empty value, which would make the current directory the relay or the data directory', async () => {
    for (const flag of ['--relay', '--data-dir']) {
      const result = await run(['start', flag, '', '--listen', '127.0.0.1:0']);
      expect(result.code).toBe(1);
      expect(oneSentence(result.stderr)).toContain(`${flag} needs a value, not an empty string`);
    }
  });

  it('a bad --listen and a bad --device-id', async () => {
    const listen = await run(['start', '--data-dir', await tempDir(), '--listen', 'localhost:99999']);
    expect(listen.code).toBe(1);
    expect(oneSentence(listen.stderr)).toContain('--listen');
    // The kernel would cut a longer socket path silently and listen somewhere else.
    const socket = await run(['start', '--data-dir', await tempDir(), '--listen', `/tmp/${'s'.repeat(120)}.sock`]);
    expect(socket.code).toBe(1);
    expect(oneSentence(socket.stderr)).toContain('a Unix socket path can be at most 107');
    const id = await run(['start', '--data-dir', await tempDir(), '--device-id', '../evil']);
    expect(id.code).toBe(1);
    expect(oneSentence(id.stderr)).toContain('--device-id');
  });

  it('a relay folder and a data directory inside one another (the relay would carry the private keys)', async () => {
    const root = await tempDir();
    const insideRelay = await run([
      'start',
      '--data-dir',
      join(root, 'relay', 'laptop'),
      '--relay',
      join(root, 'relay'),
      '--listen',
      '127.0.0.1:0',
    ]);
    expect(insideRelay.code).toBe(1);
    expect(oneSentence(insideRelay.stderr)).toContain("every device would read this device's private keys");
    const sameFolder = await run(['start', '--data-dir', join(root, 'data'), '--relay', join(root, 'data'), '--listen', '127.0.0.1:0']);
    expect(sameFolder.code).toBe(1);
    expect(oneSentence(sameFolder.stderr)).toContain('is inside the relay folder');
    const insideData = await run([
      'start',
      '--data-dir',
      join(root, 'data'),
      '--relay',
      join(root, 'data', 'checkpoints'),
      '--listen',
      '127.0.0.1:0',
    ]);
    expect(insideData.code).toBe(1);
    expect(oneSentence(insideData.stderr)).toContain('(the default) or a folder outside it');
  });

  it('a data directory or a relay folder that cannot be created', async () => {
    const file = join(await tempDir(), 'a-file');
    await writeFile(file, 'not a directory');
    const result = await run(['start', '--data-dir', join(file, 'data'), '--listen', '127.0.0.1:0']);
    expect(result.code).toBe(1);
    expect(oneSentence(result.stderr)).toContain('cannot be created or written: a part of the path is a file, not a directory');
    const relayIsFile = await run(['start', '--data-dir', await tempDir(), '--relay', file, '--listen', '127.0.0.1:0']);
    expect(relayIsFile.code).toBe(1);
    expect(oneSentence(relayIsFile.stderr)).toContain(
      `The relay folder ${file} cannot be created or written: a part of the path is a file`,
    );
    // A folder that exists but cannot hold folders (Node's own recursive mkdir spins forever on it).
    const underProc = await run(['start', '--data-dir', await tempDir(), '--relay', '/proc/self/opsync-relay', '--listen', '127.0.0.1:0']);
    expect(underProc.code).toBe(1);
    expect(oneSentence(underProc.stderr)).toContain('The relay folder /proc/self/opsync-relay cannot be created or written');
  });

  it('a damaged device id file, and a token file emptied or too short to protect anything', async () => {
    const dataDir = await tempDir();
    const relay = await tempDir();
    const first = await DaemonProcess.start(dataDir, relay);
    expect((await first.stop()).code).toBe(0);
    const start = () => run(['start', '--data-dir', dataDir, '--relay', relay, '--listen', '127.0.0.1:0']);

    const deviceFile = join(dataDir, 'device.json');
    const device = await readFile(deviceFile);
    await writeFile(deviceFile, '{"opsync_device_id":1,"dev');
    const damaged = await start();
    expect(damaged.code).toBe(1);
    expect(oneSentence(damaged.stderr)).toContain(`${deviceFile} is damaged`);
    await writeFile(deviceFile, device);

    for (const token of ['', 'short\n']) {
      await writeFile(join(dataDir, 'token'), token);
      const weak = await start();
      expect(weak.code).toBe(1);
      expect(oneSentence(weak.stderr)).toContain('anyone could guess it');
    }
  });

  it('a port in use, and a second daemon on the same data directory', async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const first = await DaemonProcess.start(dataDir, relay);
    try {
      const port = new URL((await first.info())!.url).port;
      const busy = await run(['start', '--data-dir', await tempDir(), '--relay', relay, '--listen', `127.0.0.1:${port}`]);
      expect(busy.code).toBe(1);
      expect(oneSentence(busy.stderr)).toContain('already in use');
      const twin = await run(['start', '--data-dir', dataDir, '--relay', relay, '--listen', '127.0.0.1:0']);
      expect(twin.code).toBe(1);
      expect(oneSentence(twin.stderr)).toMatch(/already open by process \d+; only one daemon may use a data directory/);
    } finally {
      await first.stop();
    }
  });
});

describe('the daemon lifecycle and the CLI', () => {
  it('shuts down cleanly on SIGTERM and SIGINT, and restarts as the same device', async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const daemon = await DaemonProcess.start(dataDir, relay);
    const device = (await daemon.info())!.device_id;
    const client = await daemon.connect();
    await client.call('sync.append', { surface: 'knowledge', payload: { id: 'kept' } });
    await client.close();
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    expect(existsSync(join(dataDir, 'daemon.json'))).toBe(false);
    expect(existsSync(join(dataDir, 'journal.log.lock'))).toBe(false);

    const again = await DaemonProcess.start(dataDir, relay);
    expect((await again.info())!.device_id).toBe(device);
    const records = await run(['call', '--data-dir', dataDir, 'sync.records', '{"surface":"knowledge"}']);
    expect(JSON.parse(records.stdout)).toMatchObject({ records: [{ key: 'kept' }] });
    again.process.kill('SIGINT');
    expect(await again.exited).toEqual({ code: 0, signal: null });
  });

  it('opsync call prints results as JSON, exits non-zero on an RPC error, and opsync status prints a summary', async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const daemon = await DaemonProcess.start(dataDir, relay);
    try {
      const ok = await run(['call', '--data-dir', dataDir, 'sync.append', '{"surface":"skill","payload":{"id":"s1"}}']);
      expect(ok.code).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ seq: 0 });
      const bad = await run(['call', '--data-dir', dataDir, 'sync.append', '{"surface":"skill","payload":{}}']);
      expect(bad.code).toBe(1);
      expect(JSON.parse(bad.stderr)).toMatchObject({ error: { code: -32602, data: { code: 'invalid_payload' } } });
      const status = await run(['status', '--data-dir', dataDir]);
      expect(status.code).toBe(0);
      expect(status.stdout).toMatch(/^device +\S+/m);
      expect(status.stdout).toMatch(/^daemon +opsync \d+\.\d+\.\d+, up \d+ s; relay \S+; leases dir$/m);
      expect(status.stdout).toMatch(/^state +sh-[0-9a-f]{64} +\(1 record\)/m);
      expect(status.stdout).toMatch(/^quarantined +0/m);
      // The same answer for scripts: sync.status as JSON, whatever the summary shows.
      const json = await run(['status', '--json'], { ...process.env, OPSYNC_DATA_DIR: dataDir });
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toMatchObject({ counts: { records: 1, quarantined: 0 }, base_checkpoint: null });
      // --watch looks again and again, one JSON line per look with --json, until interrupted.
      const watch = spawn(process.execPath, [cli(), 'status', '--watch', '--json', '--interval-ms', '100', '--data-dir', dataDir], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const exited = once(watch, 'exit');
      const looks: Array<{ counts: { records: number } }> = [];
      for await (const line of createInterface({ input: watch.stdout })) {
        looks.push(JSON.parse(line) as { counts: { records: number } });
        if (looks.length === 3) watch.kill('SIGINT');
      }
      expect(await exited).toEqual([0, null]);
      expect(looks.length).toBeGreaterThanOrEqual(3);
      for (const look of looks) expect(look.counts.records).toBe(1);
    } finally {
      await daemon.stop();
    }
    const gone = await run(['call', '--data-dir', dataDir, 'sync.status']);
    expect(gone.code).toBe(1);
    expect(oneSentence(gone.stderr)).toContain('No daemon is running');
    const missingKey = await run(['key', 'import', '--data-dir', dataDir, join(dataDir, 'no-such-key.json')]);
    expect(missingKey.code).toBe(1);
    expect(oneSentence(missingKey.stderr)).toContain('there is no such file');
  });

  it("after a kill -9, never signals the process that now has the daemon's pid, and names a damaged daemon.json", async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const daemon = await DaemonProcess.start(dataDir, relay);
    await daemon.kill9();
    // The pid the killed daemon recorded now belongs to another process (a recycled pid).
    const other = await runningProcess();
    try {
      const left = JSON.parse(await readFile(join(dataDir, 'daemon.json'), 'utf8')) as Record<string, unknown>;
      await writeFile(join(dataDir, 'daemon.json'), JSON.stringify({ ...left, pid: other.pid }));
      for (const args of [['stop'], ['call', 'sync.status'], ['status']]) {
        const result = await run([args[0]!, '--data-dir', dataDir, ...args.slice(1)]);
        expect(result.code).toBe(1);
        expect(oneSentence(result.stderr)).toContain(`(pid ${other.pid}) did not stop cleanly`);
      }
      expect(other.exitCode === null && other.signalCode === null).toBe(true);
      await writeFile(join(dataDir, 'daemon.json'), '{"url": ');
      const damaged = await run(['status', '--data-dir', dataDir]);
      expect(damaged.code).toBe(1);
      expect(oneSentence(damaged.stderr)).toContain('daemon.json is damaged');
    } finally {
      other.kill('SIGKILL');
    }
    const again = await DaemonProcess.start(dataDir, relay);
    expect((await run(['stop', '--data-dir', dataDir])).code).toBe(0);
    expect(await again.exited).toEqual({ code: 0, signal: null });
  });

  it('keeps a Postgres password out of its logs and answers, in the user part of the URL or in a parameter', async () => {
    // Nothing listens on port 1: the daemon starts offline and says why, naming the relay.
    const relay = 'postgres://opsync:user-part-secret@127.0.0.1:1/opsync?password=param-secret&sslmode=disable';
    const daemon = await DaemonProcess.start(await tempDir(), relay);
    const client = await daemon.connect();
    try {
      const status = await client.call<{ relay: string; last_error: string }>('sync.status');
      expect(status.relay).toBe('postgres://opsync:***@127.0.0.1:1/opsync?password=***&sslmode=disable');
      expect(status.last_error).toContain('127.0.0.1:1');
      const refusal = await client
        .call('lease.acquire', { agent_id: 'agent-1', ttl_ms: 1000 })
        .catch((error: unknown) => error as RpcCallError);
      expect(refusal).toMatchObject({ data: { code: 'lease_backend_unavailable' } });
      expect(JSON.stringify([status, refusal, (refusal as RpcCallError).message, daemon.logs()])).not.toMatch(
        /user-part-secret|param-secret/,
      );
    } finally {
      await client.close();
      await daemon.stop();
    }
  });

  it('makes secret files that other users could read (a copy made with a loose umask) readable by their owner only, and says so', async () => {
    const dataDir = await tempDir();
    const relay = await tempDir();
    expect((await (await DaemonProcess.start(dataDir, relay)).stop()).code).toBe(0);
    const secrets = ['token', 'device-key.json', join('keys', 'personal.json')].map((name) => join(dataDir, name));
    await Promise.all(secrets.map((path, i) => chmod(path, [0o644, 0o640, 0o604][i]!)));
    const again = await DaemonProcess.start(dataDir, relay);
    expect((await again.stop()).code).toBe(0);
    for (const path of secrets) expect((await stat(path)).mode & 0o777).toBe(0o600);
    const warnings = again
      .logs()
      .split('\n')
      .filter((line) => line.includes('could be read by other users'));
    expect(warnings.map((line) => (JSON.parse(line) as { path: string }).path).sort()).toEqual([...secrets].sort());
  });

  it('keeps its data under the XDG data home by default, with the token readable only by its owner', async () => {
    const home = await tempDir();
    const env = { ...process.env, XDG_DATA_HOME: home };
    const started = execFile(process.execPath, [cli(), 'start', '--listen', '127.0.0.1:0', '--log-level', 'warn'], { env });
    try {
      expect((await run(['wait', '--timeout-ms', '60000'], env)).code).toBe(0);
      const dataDir = join(home, 'opsync');
      expect(JSON.parse(await readFile(join(dataDir, 'daemon.json'), 'utf8'))).toMatchObject({ pid: started.pid });
      expect((await stat(join(dataDir, 'token'))).mode & 0o777).toBe(0o600);
      expect((await stat(join(dataDir, 'keys', 'personal.json'))).mode & 0o777).toBe(0o600);
    } finally {
      expect((await run(['stop'], env)).code).toBe(0);
    }
  });
});
