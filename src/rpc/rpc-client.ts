import type { Socket } from 'node:net';
import { JSONRPCClient } from 'json-rpc-2.0';
import WebSocket from 'ws';
import { OpsyncError } from '../util/opsync-error.js';
import type { JsonObject } from '../util/json.js';
import { corked, rawText } from './ws-frames.js';

/** The JSON-RPC client over WebSocket that the CLI, the demo and the tests use (proposals/rpc.md §Transport). */
const CONNECTION_CLOSED = 'the connection to the daemon closed';

/** A JSON-RPC client over WebSocket, with server notifications delivered to a listener. */
export class RpcClient {
  private readonly client: JSONRPCClient;
  private readonly listeners = new Set<(method: string, params: unknown) => void>();

  private constructor(
    private readonly ws: WebSocket,
    cork: () => void,
  ) {
    this.client = new JSONRPCClient((request) => {
      cork();
      ws.send(JSON.stringify(request));
    });
    ws.on('message', (data: WebSocket.RawData) => {
      let message: { method?: string; params?: unknown } | unknown[] | null;
      try {
        message = JSON.parse(rawText(data)) as typeof message;
      } catch {
        return; // Not JSON: no answer or notification to deliver (the daemon never sends such a frame).
      }
      if (typeof message !== 'object' || message === null) return;
      if (!Array.isArray(message) && typeof message.method === 'string') {
        for (const listener of this.listeners) listener(message.method, message.params);
      } else this.client.receive(message as never);
    });
    ws.on('close', () => this.client.rejectAllPendingRequests(CONNECTION_CLOSED));
  }

  /**
   * Answers can be far larger than requests (a resume of a long conversation): the client takes
   * any the daemon sends — up to V8's string limit (~512 MiB), past which the daemon answers
   * `answer_too_large` instead.
   */
  static connect(url: string, token: string): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, maxPayload: 2 ** 30 });
      let socket: Socket | undefined;
      ws.once('upgrade', (response) => (socket = response.socket));
      ws.once('open', () => resolve(new RpcClient(ws, corked(socket!))));
      ws.once('unexpected-response', (_request, response) => {
        reject(
          new OpsyncError(
            'unauthorized',
            response.statusCode === 401 ? 'The daemon refused the token.' : `The daemon answered HTTP ${response.statusCode}.`,
          ),
        );
      });
      ws.once('error', (error: Error) =>
        reject(new OpsyncError('relay_unavailable', `Cannot reach the daemon at ${url}: ${error.message}.`, { url })),
      );
    });
  }

  /** Calls a method; a JSON-RPC error rejects with an RpcCallError carrying code, message and data. */
  async call<T = unknown>(method: string, params: object = {}): Promise<T> {
    // A request sent on a closed socket is dropped by ws without a word: it would never be answered.
    if (this.ws.readyState !== WebSocket.OPEN) throw new RpcCallError(0, CONNECTION_CLOSED, {});
    const response = await this.client.requestAdvanced({ jsonrpc: '2.0', id: this.nextId++, method, params });
    if (response.error) throw new RpcCallError(response.error.code, response.error.message, (response.error.data ?? {}) as JsonObject);
    return response.result as T;
  }

  /** Sends raw text (for tests of malformed input); answers arrive through `onRaw`. */
  sendRaw(text: string | Buffer): void {
    this.ws.send(text);
  }

  /** Hears every message as text; returns a function that stops listening. */
  onRaw(listener: (text: string) => void): () => void {
    const onMessage = (data: WebSocket.RawData) => listener(rawText(data));
    this.ws.on('message', onMessage);
    return () => this.ws.off('message', onMessage);
  }

  onNotification(listener: (method: string, params: unknown) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }

  private nextId = 1;
}

export class RpcCallError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data: JsonObject,
  ) {
    super(message);
  }
}
