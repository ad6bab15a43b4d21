import { OpsyncClient, type ClientOptions, type WebSocketLike } from './client.js';

export * from './client.js';
export * from './fenced.js';
export type { Change, MethodName, OpsyncMethods } from '../rpc/api.js';

/**
 * The client for browser pages — an Electron renderer, a Tauri webview, a local web UI
 * (proposals/rpc.md §Client). The browser's `WebSocket` cannot send headers: the token goes as
 * the subprotocol `opsync.bearer.<token>` beside `opsync.v1`, and the page's origin must be one
 * the daemon was started with (`--allow-origin`). Imports nothing from Node.
 */
export function connect(url: string, token: string, options?: ClientOptions): Promise<OpsyncClient> {
  return OpsyncClient.connect(
    () => Promise.resolve(() => new WebSocket(url, ['opsync.v1', `opsync.bearer.${token}`]) as unknown as WebSocketLike),
    options,
  );
}
