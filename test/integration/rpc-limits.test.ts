import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RpcCallError, RpcClient } from '../../src/rpc/rpc-client.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs('file');

/**
 * Design §11: every external input has a limit and a clear error, and nothing a client sends can
 * crash the daemon. One real daemon; after every case a bystander client must still be served.
 */
describe('RPC limits and bad input', () => {
  let daemon: DaemonProcess;
  let url: string;
  let token: string;
  let bystander: RpcClient;

  beforeAll(async () => {
    daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    url = (await daemon.info())!.url;
    token = await daemon.token();
    bystander = await RpcClient.connect(url, token);
  });
  afterAll(async () => {
    await bystander.close();
    const exit = await daemon.stop();
    expect(exit.code).toBe(0);
  });

  async function stillServing(): Promise<void> {
    expect(await bystander.call('sync.hash_state')).toMatchObject({ state_hash: expect.stringMatching(/^sh-/) as unknown });
  }

  async function rpcError(method: string, params: unknown): Promise<RpcCallError> {
    const client = await RpcClient.connect(url, token);
    try {
      await client.call(method, params as object);
      throw new Error(`${method} succeeded`);
    } catch (error) {
      if (!(error instanceof RpcCallError)) throw error;
      return error;
    } finally {
      await client.close();
    }
  }

  /**
   * Sends raw text and collects what the daemon answers to it: the answers that arrive before
   * the answer to a following `sync.pump`. Pumps run one at a time in arrival order, so the
   * probe is answered only after everything sent before it was handled.
   */
  async function raw(text: string | Buffer): Promise<unknown[]> {
    const client = await RpcClient.connect(url, token);
    const answers: unknown[] = [];
    client.onRaw((message) => answers.push(JSON.parse(message)));
    client.sendRaw(text);
    await client.call('sync.pump');
    await client.close();
    return answers.slice(0, -1);
  }

  it('refuses a missing or wrong token before any method runs', async () => {
    await expect(RpcClient.connect(url, '')).rejects.toMatchObject({ code: 'unauthorized' });
    await expect(RpcClient.connect(url, 'wrong-token')).rejects.toMatchObject({ code: 'unauthorized' });
    await stillServing();
  });

  it('answers garbage with a parse error and binary frames with an invalid request', async () => {
    expect(await raw('{"jsonrpc":"2.0", oops')).toEqual([
      { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error', data: { code: 'parse_error' } } },
    ]);
    expect(await raw(Buffer.from([1, 2, 3]))).toMatchObject([{ id: null, error: { code: -32600 } }]);
    await stillServing();
  });

  it('refuses JSON nested too deeply before parsing it', async () => {
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    expect(await raw(deep)).toMatchObject([{ id: null, error: { code: -32600, data: { code: 'invalid_json' } } }]);
    const deepParams = {
      surface: 'knowledge',
      payload: { id: 'x', nest: JSON.parse('{"a":'.repeat(70) + '1' + '}'.repeat(70)) as unknown },
    };
    expect(await rpcError('sync.append', deepParams)).toMatchObject({ code: -32602, data: { field: 'params.payload' } });
    await stillServing();
  });

  it('closes a connection that sends an oversize frame, and keeps serving others', async () => {
    const client = await RpcClient.connect(url, token);
    const closed = new Promise<void>((resolve) =>
      (client as unknown as { ws: { once(e: string, f: () => void): void } }).ws.once('close', resolve),
    );
    client.sendRaw(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'sync.hash_state', params: { pad: 'x'.repeat(5 * 1024 * 1024) } }));
    await closed;
    // A call on the closed connection is refused at once, not left waiting for an answer that cannot come.
    await expect(client.call('sync.hash_state')).rejects.toMatchObject({ code: 0, message: 'the connection to the daemon closed' });
    await stillServing();
  });

  it('refuses an oversize payload with payload_too_large and writes nothing', async () => {
    const before = await bystander.call<{ records: number }>('sync.hash_state');
    const error = await rpcError('sync.append', { surface: 'knowledge', payload: { id: 'big', text: 'x'.repeat(1_100_000) } });
    expect(error).toMatchObject({ code: -32602, data: { code: 'payload_too_large' } });
    expect((await bystander.call<{ records: number }>('sync.hash_state')).records).toBe(before.records);
  });

  it.each([
    ['an unknown surface', { surface: 'notes', payload: { id: 'x' } }, 'invalid_surface'],
    ['a registry kind like a path', { surface: 'registry:../x', payload: { id: 'x' } }, 'invalid_surface'],
    ['a bad scope', { surface: 'knowledge', payload: { id: 'x' }, scope: 'team' }, 'invalid_scope'],
    ['an org like a path', { surface: 'knowledge', payload: { id: 'x' }, org: '../x' }, 'invalid_params'],
    ['an org with a NUL', { surface: 'knowledge', payload: { id: 'x' }, org: 'a\u0000b' }, 'invalid_params'],
    [
      'a conversation id like a path',
      { surface: 'conversation', payload: { conversation_id: 'a/b', role: 'user', content: 'x', timestamp: 1 } },
      'invalid_payload',
    ],
    ['a payload missing its id', { surface: 'knowledge', payload: { text: 'x' } }, 'invalid_payload'],
    ['a wrongly typed param', { surface: 5, payload: { id: 'x' } }, 'invalid_surface'],
    ['an unknown param', { surface: 'knowledge', payload: { id: 'x' }, extra: true }, 'invalid_params'],
  ])('refuses %s with a named -32602 error', async (_what, params, code) => {
    expect(await rpcError('sync.append', params)).toMatchObject({ code: -32602, data: { code } });
    await stillServing();
  });

  it('refuses positional params, wrong types in other methods, and unknown methods', async () => {
    expect(await raw(JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'sync.records', params: ['knowledge'] }))).toMatchObject([
      { id: 7, error: { code: -32602 } },
    ]);
    expect(await rpcError('sync.records', { surface: 'knowledge', limit: 'ten' })).toMatchObject({
      code: -32602,
      data: { field: 'params.limit' },
    });
    expect(await rpcError('sync.nope', {})).toMatchObject({ code: -32601 });
    await stillServing();
  });

  it('honours batches and notifications exactly', async () => {
    const batch = await raw(
      JSON.stringify([
        { jsonrpc: '2.0', id: 'a', method: 'sync.hash_state' },
        { jsonrpc: '2.0', method: 'sync.hash_state' },
      ]),
    );
    expect(batch).toHaveLength(1);
    expect(Array.isArray(batch[0])).toBe(true);
    expect(batch[0]).toMatchObject([{ id: 'a', result: { state_hash: expect.any(String) as unknown } }]);
    expect(
      await raw(
        JSON.stringify([
          { jsonrpc: '2.0', method: 'sync.hash_state' },
          { jsonrpc: '2.0', method: 'sync.pump' },
        ]),
      ),
    ).toEqual([]);
    expect(await raw('[]')).toMatchObject([{ id: null, error: { code: -32600 } }]);
    expect(await raw(JSON.stringify([1, { jsonrpc: '1.0', id: 3, method: 'x' }]))).toMatchObject([
      [
        { id: null, error: { code: -32600 } },
        { id: 3, error: { code: -32600 } },
      ],
    ]);
    const huge = JSON.stringify(Array.from({ length: 300 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'sync.hash_state' })));
    expect(await raw(huge)).toMatchObject([{ id: null, error: { code: -32600 } }]);
    await stillServing();
  });

  it('describes every method it serves in an OpenRPC document', async () => {
    const doc = await bystander.call<{
      openrpc: string;
      methods: Array<{ name: string; params: Array<{ name: string; schema: object }>; result: { schema: object } }>;
      'x-error-codes': Record<string, number>;
    }>('rpc.discover');
    expect(doc.openrpc).toBe('1.2.6');
    const names = doc.methods.map((m) => m.name);
    for (const name of [
      'sync.status',
      'sync.hash_state',
      'sync.append',
      'sync.pump',
      'sync.checkpoint',
      'sync.rebase',
      'sync.subscribe',
      'sync.records',
      'sync.verify',
      'sync.stats',
      'sync.compact',
      'rpc.discover',
    ]) {
      expect(names).toContain(name);
    }
    const append = doc.methods.find((m) => m.name === 'sync.append')!;
    expect(append.params.map((p) => p.name)).toEqual(['surface', 'payload', 'scope', 'org']);
    for (const method of doc.methods) {
      const answer = await rpcError(method.name, { definitely_not_a_param: 1 }).catch(() => null);
      if (method.params.length === 0 || answer) expect(answer?.code).toBe(-32602);
    }
    expect(doc['x-error-codes']).toMatchObject({ lease_held: -32060, relay_fork: -32020, invalid_surface: -32602 });
  });

  it('survives a client that sends garbage and disconnects mid-frame', async () => {
    const { port } = new URL(url);
    await new Promise<void>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1');
      socket.on('error', reject);
      socket.on('connect', () => {
        socket.write(
          `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${token}\r\n\r\n`,
        );
      });
      socket.once('data', (answer) => {
        expect(answer.toString()).toMatch(/^HTTP\/1.1 101/);
        socket.write(Buffer.concat([Buffer.from([0x81, 0xfe, 0x10, 0x00, 1, 2, 3, 4]), Buffer.alloc(100, 0x41)]));
        socket.destroy();
        resolve();
      });
    });
    await new Promise<void>((resolve) => {
      const socket = connect(Number(new URL(url).port), '127.0.0.1', () => {
        socket.end('\u0000\u0001garbage that is not HTTP\r\n\r\n');
      });
      socket.resume();
      socket.on('close', () => resolve());
      socket.on('error', () => resolve());
    });
    await stillServing();
  });
});
