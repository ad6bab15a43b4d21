import { createServer, type IncomingMessage, type Server } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { JSONRPCClient } from 'json-rpc-2.0';
import WebSocket, { WebSocketServer } from 'ws';
import { OpsyncError } from '../oplog/opsync-error.js';
import type { JsonObject } from '../util/json.js';
import { LIMITS } from '../util/limits.js';
import type { Dispatcher } from './dispatcher.js';
import type { Connection } from './method.js';

/**
 * JSON-RPC over WebSocket: the server the daemon exposes and the client the CLI, the demo and
 * the tests use. The only module that imports `ws` (style 6).
 *
 * - listens on host:port (port 0 picks one) or a Unix socket path;
 * - refuses the upgrade with 401 unless `Authorization: Bearer <token>` matches, so no method
 *   runs for an unauthenticated client;
 * - frames above LIMITS.maxFrameBytes close the connection (1009); binary frames are answered
 *   as invalid requests; a client that disconnects mid-frame only loses its own connection;
 * - each connection has at most `maxInFlight` requests in progress, and none starts while more
 *   than `maxUnsentBytes` of its answers wait to be sent: past either, requests wait and the
 *   socket stops being read until the client reads (backpressure, never unbounded memory);
 * - a connection whose unsent output still grows past `maxBacklogBytes` (a subscriber that
 *   never reads its notifications) is dropped, counted and logged;
 * - both ends cork their socket for the rest of a turn of the event loop when they send, so the
 *   frames of one turn (the answers of one group commit, a burst of pipelined calls) leave in
 *   one write.
 */
export type Listen = { readonly host: string; readonly port: number } | { readonly socketPath: string };

export interface RpcServer {
  /** `ws://host:port` or `ws+unix:///path`. */
  readonly url: string;
  readonly stats: { connections: number; rejected_auth: number; oversize_frames: number; held_back: number; dropped_unread: number };
  /** Sends a notification to every connection that `filter` accepts. */
  notify(method: string, params: JsonObject, filter: (connection: Connection) => boolean): void;
  close(): Promise<void>;
}

export interface TransportLog {
  warn(fields: object, message: string): void;
}

/** Per-connection output limits (LIMITS by default; tests use small ones). */
export type ConnectionLimits = { readonly [K in 'maxInFlight' | 'maxUnsentBytes' | 'maxBacklogBytes']: number };

export async function startRpcServer(listen: Listen, token: string, dispatcher: Dispatcher, log: TransportLog, limits: ConnectionLimits = LIMITS): Promise<RpcServer> {
  const expected = Buffer.from(`Bearer ${token}`);
  const http: Server = createServer((_request, response) => {
    response.writeHead(426, { 'content-type': 'text/plain' }).end('opsync speaks JSON-RPC over WebSocket only.\n');
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: LIMITS.maxFrameBytes });
  const sockets = new Map<WebSocket, { connection: Connection; send: (text: string) => void }>();
  const stats = { connections: 0, rejected_auth: 0, oversize_frames: 0, held_back: 0, dropped_unread: 0 };
  let nextId = 1;

  http.on('upgrade', (request: IncomingMessage, socket, head) => {
    const given = Buffer.from(request.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      stats.rejected_auth++;
      socket.end('HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(request, socket, head, (ws) => serve(ws, socket as Socket));
  });

  function serve(ws: WebSocket, socket: Socket): void {
    const connection: Connection = { id: nextId++, subscribed: false };
    const cork = corked(socket);
    const send = (text: string) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      // Checked at the first send of a turn: what this turn wrote is corked, not unread.
      if (socket.writableCorked === 0 && ws.bufferedAmount > limits.maxBacklogBytes) {
        stats.dropped_unread++;
        log.warn({ connection: connection.id, unsent_bytes: ws.bufferedAmount }, 'dropped a connection that does not read what it is sent');
        ws.terminate();
        return;
      }
      cork();
      ws.send(text);
    };
    sockets.set(ws, { connection, send });
    stats.connections = sockets.size;
    const requests = new RequestQueue(ws, limits, (text) => dispatcher.handle(text, connection), send, () => stats.held_back++);
    socket.on('drain', requests.admit);
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (isBinary) {
        send(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request: send JSON-RPC as text frames', data: { code: 'invalid_request' } } }));
        return;
      }
      requests.push(rawText(data));
    });
    ws.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') stats.oversize_frames++;
    });
    ws.on('close', () => {
      sockets.delete(ws);
      stats.connections = sockets.size;
    });
  }

  await listenOn(http, listen);
  const address = http.address();
  const url = 'socketPath' in listen ? `ws+unix://${listen.socketPath}` : `ws://${listen.host}:${typeof address === 'object' && address ? address.port : listen.port}`;
  return {
    url,
    stats,
    notify(method, params, filter) {
      const text = JSON.stringify({ jsonrpc: '2.0', method, params });
      for (const { connection, send } of sockets.values()) if (filter(connection)) send(text);
    },
    async close() {
      for (const ws of sockets.keys()) ws.close(1001, 'daemon shutting down');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
      if ('socketPath' in listen) await rm(listen.socketPath, { force: true });
    },
  };
}

/** Requests of one connection started in one turn of the event loop, at most (see RequestQueue). */
const MAX_STARTS_PER_TURN = 32;

/**
 * One connection's requests, started in arrival order while the client keeps up: at most
 * `maxInFlight` in progress, none while more than `maxUnsentBytes` of its answers wait unread,
 * and at most MAX_STARTS_PER_TURN per turn of the event loop — a socket read can hold a thousand
 * requests, and a handler builds its answer before it is sent, so the answers of one turn must
 * be counted before more start. While requests wait, the socket is not read.
 */
class RequestQueue {
  private waiting: string[] = [];
  private next = 0;
  private inFlight = 0;
  private startedThisTurn = 0;
  /** More than `maxUnsentBytes` of answers wait unread: nothing new starts. */
  private congested = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly limits: ConnectionLimits,
    private readonly handle: (text: string) => Promise<string | null>,
    private readonly answer: (text: string) => void,
    private readonly heldBack: () => void,
  ) {}

  push(text: string): void {
    this.waiting.push(text);
    this.admit();
  }

  readonly admit = (): void => {
    const { ws, limits } = this;
    const congested = ws.bufferedAmount > limits.maxUnsentBytes;
    if (congested && !this.congested) this.heldBack();
    this.congested = congested;
    while (!this.congested && this.next < this.waiting.length && this.inFlight < limits.maxInFlight && this.startedThisTurn < MAX_STARTS_PER_TURN) {
      this.start(this.waiting[this.next++]!);
      this.congested = ws.bufferedAmount > limits.maxUnsentBytes;
    }
    const backlog = this.waiting.length - this.next;
    if (backlog === 0) {
      this.waiting = [];
      this.next = 0;
    }
    // Reading on would only queue more: stop while the client lags or a socket read's worth waits.
    const stop = this.congested || backlog >= limits.maxInFlight;
    if (stop && !ws.isPaused) ws.pause();
    else if (!stop && ws.isPaused) ws.resume();
  };

  private start(text: string): void {
    if (this.startedThisTurn++ === 0) setImmediate(this.nextTurn);
    this.inFlight++;
    void this.handle(text).then((answer) => {
      this.inFlight--;
      if (answer !== null) this.answer(answer);
      this.admit();
    });
  }

  private readonly nextTurn = (): void => {
    this.startedThisTurn = 0;
    this.admit();
  };
}

/**
 * Corks `socket` until the current turn of the event loop ends, so that the frames written in
 * one turn (the answers of one group commit, a burst of pipelined requests) leave in one write.
 */
function corked(socket: Socket): () => void {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return () => {
    if (corked) return;
    corked = true;
    socket.cork();
    process.nextTick(uncork);
  };
}

async function listenOn(http: Server, listen: Listen): Promise<void> {
  if ('socketPath' in listen) await clearStaleSocket(listen.socketPath);
  await new Promise<void>((resolve, reject) => {
    http.once('error', (error: NodeJS.ErrnoException) => {
      const where = 'socketPath' in listen ? listen.socketPath : `${listen.host}:${listen.port}`;
      if (error.code === 'EADDRINUSE') reject(new OpsyncError('config_invalid', `${where} is already in use; choose another --listen address (port 0 picks a free one).`, { listen: where }));
      else if (error.code === 'EACCES') reject(new OpsyncError('config_invalid', `Not allowed to listen on ${where}.`, { listen: where }));
      else reject(new OpsyncError('config_invalid', `Cannot listen on ${where}: ${error.message}.`, { listen: where }));
    });
    if ('socketPath' in listen) http.listen(listen.socketPath, () => resolve());
    else http.listen(listen.port, listen.host, () => resolve());
  });
}

/** A socket file nobody answers on is left over from a crash: remove it. A live one is in use. */
async function clearStaleSocket(path: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const probe = netConnect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (!live) await rm(path, { force: true });
}

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
      const message = JSON.parse(rawText(data)) as { method?: string; params?: unknown } | unknown[];
      if (!Array.isArray(message) && typeof message.method === 'string') {
        for (const listener of this.listeners) listener(message.method, message.params);
      } else this.client.receive(message as never);
    });
    ws.on('close', () => this.client.rejectAllPendingRequests('the connection to the daemon closed'));
  }

  /** Answers can be far larger than requests (a resume of a long conversation): up to 256 MiB. */
  static connect(url: string, token: string): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, maxPayload: 256 * 2 ** 20 });
      let socket: Socket | undefined;
      ws.once('upgrade', (response) => (socket = response.socket));
      ws.once('open', () => resolve(new RpcClient(ws, corked(socket!))));
      ws.once('unexpected-response', (_request, response) => {
        reject(new OpsyncError('unauthorized', response.statusCode === 401 ? 'The daemon refused the token.' : `The daemon answered HTTP ${response.statusCode}.`));
      });
      ws.once('error', (error: Error) => reject(new OpsyncError('relay_unavailable', `Cannot reach the daemon at ${url}: ${error.message}.`, { url })));
    });
  }

  /** Calls a method; a JSON-RPC error rejects with an RpcCallError carrying code, message and data. */
  async call<T = unknown>(method: string, params: object = {}): Promise<T> {
    const response = await this.client.requestAdvanced({ jsonrpc: '2.0', id: this.nextId++, method, params });
    if (response.error) throw new RpcCallError(response.error.code, response.error.message, (response.error.data ?? {}) as JsonObject);
    return response.result as T;
  }

  /** Sends raw text (for tests of malformed input); answers arrive through `onRaw`. */
  sendRaw(text: string | Buffer): void {
    this.ws.send(text);
  }

  onRaw(listener: (text: string) => void): void {
    this.ws.on('message', (data: WebSocket.RawData) => listener(rawText(data)));
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

function rawText(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
