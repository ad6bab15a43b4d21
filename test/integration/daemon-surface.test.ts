import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { parseStartArgs } from '../../src/daemon/config.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * The daemon's own surface against a hostile local client or web page (proposals/threat-model.md
 * §The RPC surface): no socket survives without a token, no file but a stale socket is replaced,
 * no foreign page or rebound host name is let in.
 */
describe('the RPC surface', () => {
  it('closes every socket it refuses for a bad token, so refused clients cannot exhaust its descriptors', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    const { port } = new URL((await daemon.info())!.url);
    const fds = () => readdir(`/proc/${daemon.process.pid}/fd`).then((names) => names.length);
    const before = await fds();
    const sockets: Socket[] = [];
    try {
      for (let i = 0; i < 40; i++) {
        // A client that never closes its end: only the daemon can free the socket.
        const socket = connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
        sockets.push(socket);
        const answer = await upgrade(socket, { authorization: 'Bearer wrong-token-wrong-token-wrong-token-000' });
        expect(answer).toMatch(/^HTTP\/1.1 401/);
      }
      await eventually(async () => (await fds()) < before + 10, 'the daemon kept the refused sockets open');
    } finally {
      sockets.forEach((socket) => socket.destroy());
      await daemon.stop();
    }
  });

  it('keeps serving authenticated clients while many connections idle without a token, closing those past its cap', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    const { port } = new URL((await daemon.info())!.url);
    const idle: Socket[] = [];
    try {
      for (let i = 0; i < 200; i++) idle.push(connect(Number(port), '127.0.0.1'));
      await Promise.all(idle.map((socket) => new Promise((resolve) => socket.once('connect', resolve).once('error', resolve))));
      const closed = await Promise.all(
        idle.map((socket) =>
          closedByPeer(socket).then(
            () => true,
            () => false,
          ),
        ),
      );
      expect(closed.filter(Boolean).length).toBeGreaterThan(100);
      const client = await daemon.connect();
      expect(await client.call('sync.hash_state')).toMatchObject({ records: 0 });
      await client.close();
      expect(daemon.logs()).toMatch(/unauthenticated connections/);
    } finally {
      idle.forEach((socket) => socket.destroy());
      await daemon.stop();
    }
  });

  it('answers /healthz and /readyz behind its token: alive, and ready with its journal open', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    try {
      const base = (await daemon.info())!.url.replace(/^ws:/, 'http:');
      const authorization = `Bearer ${await daemon.token()}`;
      expect((await fetch(`${base}/readyz`)).status).toBe(401);
      expect((await fetch(`${base}/readyz`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
      const health = await fetch(`${base}/healthz`, { headers: { authorization } });
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ alive: true });
      const ready = await fetch(`${base}/readyz`, { headers: { authorization } });
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ ready: true, journal: 'open', relay_error: null });
      // Refused probes are counted like refused connections.
      const client = await daemon.connect();
      const stats = await client.call<{ rpc: { rejected_auth: number } }>('sync.stats');
      await client.close();
      expect(stats.rpc.rejected_auth).toBe(2);
      // Any other path is still not served over plain HTTP.
      expect((await fetch(`${base}/metrics-or-anything`, { headers: { authorization } })).status).toBe(426);
    } finally {
      await daemon.stop();
    }
  });

  it('accepts the auth scheme in any case, as RFC 7235 says', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    try {
      const { url } = (await daemon.info())!;
      for (const scheme of ['bearer', 'BEARER', 'Bearer']) {
        const ws = new WebSocket(url, { headers: { authorization: `${scheme} ${await daemon.token()}` } });
        await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
        ws.close();
      }
    } finally {
      await daemon.stop();
    }
  });

  it('refuses a page from a foreign origin (403) and a rebound host name, and lets in an origin it was told to allow', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir(), ['--allow-origin', 'http://app.localhost:5173']);
    try {
      const { url } = (await daemon.info())!;
      const token = await daemon.token();
      const status = (headers: Record<string, string>) =>
        new Promise<number>((resolve) => {
          const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}`, ...headers } });
          ws.once('open', () => (ws.close(), resolve(101)));
          ws.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
          ws.once('error', () => resolve(-1));
        });
      expect(await status({ origin: 'https://evil.example' })).toBe(403);
      expect(await status({ host: `evil.example:${new URL(url).port}` })).toBe(403);
      expect(await status({ origin: 'http://app.localhost:5173' })).toBe(101);
      expect(await status({})).toBe(101);
    } finally {
      await daemon.stop();
    }
  });

  it('replaces only a stale socket at --listen PATH: a regular file there is refused and kept', async () => {
    const dir = await tempDir();
    const path = join(dir, 'precious.txt');
    await writeFile(path, 'do not delete');
    const started = await DaemonProcess.start(await tempDir(), await tempDir(), ['--listen', path]).then(
      async (daemon) => (await daemon.stop(), null),
      (error: Error) => error,
    );
    expect(started?.message).toMatch(/not a socket/);
    expect(await readFile(path, 'utf8')).toBe('do not delete');
  });
});

describe('a start that fails part-way', () => {
  it('closes what it had opened: the same data directory starts again in the same process', async () => {
    const [dataDir, relay] = [await tempDir(), await tempDir()];
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as AddressInfo).port;
    const args = (listen: string) => [
      '--data-dir',
      dataDir,
      '--relay',
      relay,
      '--listen',
      listen,
      '--lease-backend',
      'memory',
      '--log-level',
      'silent',
    ];
    try {
      await expect(Daemon.start(parseStartArgs(args(`127.0.0.1:${taken}`), {}))).rejects.toMatchObject({ code: 'config_invalid' });
    } finally {
      blocker.close();
    }
    // Had the failed start left its session open, this process would still hold the journal's lock.
    const daemon = await Daemon.start(parseStartArgs(args('127.0.0.1:0'), {}));
    await daemon.close();
  });
});

describe('the intent ledger', () => {
  it("keys runs by agent: agent X committing run r1 does not make agent Y's r1 already committed", async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    const client = await daemon.connect();
    try {
      const x = await client.call<{ epoch: number }>('lease.acquire', { agent_id: 'agent-x', ttl_ms: 60_000 });
      await client.call('sync.record_intent', { agent_id: 'agent-x', run_id: 'r1', epoch: x.epoch, status: 'committed' });
      const y = await client.call<{ epoch: number }>('lease.acquire', { agent_id: 'agent-y', ttl_ms: 60_000 });
      expect(await client.call('sync.fence_check', { agent_id: 'agent-y', run_id: 'r1', epoch: y.epoch })).toMatchObject({
        decision: { decision: 'proceed' },
        may_dispatch: true,
      });
      expect(
        await client.call('sync.record_intent', { agent_id: 'agent-y', run_id: 'r1', epoch: y.epoch, status: 'pending' }),
      ).toMatchObject({ recorded: true });
      expect(await client.call('sync.fence_check', { agent_id: 'agent-x', run_id: 'r1', epoch: x.epoch })).toMatchObject({
        decision: { decision: 'already_committed' },
      });
    } finally {
      await client.close();
      await daemon.stop();
    }
  });
});

/** Sends a WebSocket upgrade request with `headers` and resolves with the status line of the answer. */
function upgrade(socket: Socket, headers: Record<string, string>): Promise<string> {
  const lines = [
    'GET / HTTP/1.1',
    'Host: 127.0.0.1',
    'Connection: Upgrade',
    'Upgrade: websocket',
    'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
  ];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  socket.write(lines.join('\r\n') + '\r\n\r\n');
  return new Promise((resolve, reject) => {
    socket.once('data', (data: Buffer) => resolve(data.toString('latin1').split('\r\n')[0]!));
    socket.once('error', reject);
  });
}

/** Resolves once `check` holds, looking again after each short pause; fails with `why` after `timeoutMs`. */
async function eventually(check: () => Promise<boolean>, why: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(why);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves once the other end closed `socket` (it was not closed from this end). */
function closedByPeer(socket: Socket, timeoutMs = 20_000): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the daemon kept the socket open')), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.resume();
  });
}
