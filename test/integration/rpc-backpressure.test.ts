import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { RpcEndpoint } from '../../src/rpc/rpc-endpoint.js';
import { defineMethod, resultObject } from '../../src/rpc/method.js';
import { object } from '../../src/rpc/schema.js';
import { startRpcServer, type RpcServer } from '../../src/rpc/rpc-server.js';

/**
 * A client that stops reading must not make the daemon hold unbounded memory (proposals/rpc.md §Transport):
 * its requests wait while its answers are unread, and its notifications coalesce. Real
 * sockets; small limits so the test is quick.
 */
const ANSWER = 'a'.repeat(64 * 1024);
const LIMITS = { maxInFlight: 1024, maxUnsentBytes: 256 * 1024 };

describe('output backpressure on a WebSocket connection', () => {
  let server: RpcServer;
  let calls = 0;
  const open: WebSocket[] = [];

  async function start(): Promise<void> {
    const method = defineMethod({
      name: 'test.big',
      summary: 'answers 64 KiB',
      params: object({}),
      result: resultObject({}),
      handler: () => ((calls += 1), ANSWER),
    });
    const endpoint = new RpcEndpoint([method], { error: () => {} });
    server = await startRpcServer({ host: '127.0.0.1', port: 0 }, 'token', endpoint, LIMITS);
  }

  async function connect(): Promise<WebSocket> {
    const ws = new WebSocket(server.url, { headers: { authorization: 'Bearer token' } });
    open.push(ws);
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    return ws;
  }

  /** Resolves once `condition` holds, re-checking after each turn of the event loop; fails after 30 s. */
  async function reached(condition: () => boolean): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error('condition not reached within 30 s');
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  afterEach(async () => {
    for (const ws of open.splice(0)) ws.terminate();
    await server.close();
    calls = 0;
  });

  it('holds back the requests of a client that does not read, then delivers every answer in order once it reads', async () => {
    await start();
    const client = await connect();
    client.pause();
    // 64 MiB of answers: more than the kernel's socket buffers take in for a client that does not read.
    const requests = 1000;
    for (let id = 0; id < requests; id++) client.send(JSON.stringify({ jsonrpc: '2.0', id, method: 'test.big' }));
    await reached(() => server.stats.held_back > 0);
    // The server stopped well short of producing them all.
    expect(calls).toBeLessThan(requests);

    const ids: number[] = [];
    const all = new Promise<void>((resolve) => {
      client.on('message', (data: Buffer) => {
        const answer = JSON.parse(data.toString()) as { id: number; result: string };
        expect(answer.result).toBe(ANSWER);
        if (ids.push(answer.id) === requests) resolve();
      });
    });
    client.resume();
    await all;
    expect(ids).toEqual(Array.from({ length: requests }, (_, id) => id));
    expect(calls).toBe(requests);
  });

  it('coalesces the notifications of a subscriber that does not read: once it reads, the newest one arrives', async () => {
    await start();
    const silent = await connect();
    const reader = await connect();
    silent.pause();
    await reached(() => server.stats.connections === 2);
    const heard = { silent: [] as number[], reader: [] as number[] };
    silent.on('message', (data: Buffer) => heard.silent.push((JSON.parse(data.toString()) as { params: { i: number } }).params.i));
    reader.on('message', (data: Buffer) => heard.reader.push((JSON.parse(data.toString()) as { params: { i: number } }).params.i));
    // 64 notifications of 1 MiB, one per turn of the event loop: far more than the silent
    // client's socket buffers and the 256 KiB limit hold.
    const sent = 64;
    for (let i = 0; i < sent; i++) {
      server.notify('test.changed', () => ({ i, blob: 'n'.repeat(2 ** 20) }));
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(server.stats.coalesced_notifications).toBeGreaterThan(0);
    await reached(() => heard.reader.length === sent);
    expect(heard.reader).toEqual(Array.from({ length: sent }, (_, i) => i));

    silent.resume();
    await reached(() => heard.silent.at(-1) === sent - 1);
    // In order, ending with the newest; the ones replaced while it lagged never went out.
    expect(heard.silent.length).toBeLessThan(sent);
    expect(heard.silent).toEqual([...heard.silent].sort((a, b) => a - b));
    expect(server.stats.connections).toBe(2);
  });
});
