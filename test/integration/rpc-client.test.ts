import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { RpcClient } from '../../src/rpc/rpc-client.js';

/** The client the CLI, the demo and hosts in TypeScript use, against a server that misbehaves. */
describe('RpcClient', () => {
  let server: WebSocketServer | null = null;
  afterEach(async () => {
    await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
    server = null;
  });

  it('ignores frames that are not JSON-RPC messages and still gets its answer', async () => {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    server.on('connection', (ws) => {
      ws.on('message', (data: Buffer) => {
        const request = JSON.parse(data.toString('utf8')) as { id: number };
        for (const junk of ['not json', 'null', '42', '"text"', '{"jsonrpc":"2.0","id":9999,"result":"for no one"}']) ws.send(junk);
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: request.id, result: 'answered' }));
      });
    });
    await new Promise((resolve) => server!.once('listening', resolve));
    const client = await RpcClient.connect(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`, 'token');
    try {
      expect(await client.call('any.method')).toBe('answered');
      expect(await client.call('any.method')).toBe('answered');
    } finally {
      await client.close();
    }
  });
});
