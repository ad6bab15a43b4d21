import { constants } from 'node:fs';
import { open as fsOpen } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import { OpsyncClient, type ClientOptions, type WebSocketLike } from './client.js';

export * from './client.js';
export * from './fenced.js';
export type { Change, MethodName, OpsyncMethods } from '../rpc/api.js';

/**
 * The client for Node hosts (proposals/rpc.md §Client): `ws` with the token in `Authorization`.
 * `fromDataDir` finds the daemon of a data directory through its `daemon.json` and `token`, and
 * reads them again before every reconnect, so a daemon restarted on another port is found.
 */
export function connect(url: string, token: string, options?: ClientOptions): Promise<OpsyncClient> {
  return OpsyncClient.connect(() => Promise.resolve(() => open(url, token)), options);
}

export function fromDataDir(dataDir: string, options?: ClientOptions): Promise<OpsyncClient> {
  return OpsyncClient.connect(async () => {
    const [info, token] = await Promise.all([readSmall(join(dataDir, 'daemon.json')), readSmall(join(dataDir, 'token'))]);
    const { url } = JSON.parse(info) as { url?: unknown };
    if (typeof url !== 'string') throw new Error(`${join(dataDir, 'daemon.json')} names no url: is the daemon running?`);
    return () => open(url, token.trim());
  }, options);
}

/** Files of a data directory it reads at most: daemon.json and the token are a few hundred bytes. */
const MAX_READ_BYTES = 64 * 1024;

/** A small regular file, never through a symbolic link, read with a byte bound. */
async function readSmall(path: string): Promise<string> {
  const handle = await fsOpen(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const seen = await handle.stat();
    if (!seen.isFile() || seen.size > MAX_READ_BYTES)
      throw new Error(`${path} is not a regular file of at most ${MAX_READ_BYTES} bytes: not what a daemon writes there.`);
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

function open(url: string, token: string): WebSocketLike {
  // Answers can be far larger than requests (a long conversation resumed).
  return new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, maxPayload: 2 ** 30 }) as unknown as WebSocketLike;
}
