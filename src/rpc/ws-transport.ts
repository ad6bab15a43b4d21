import { createServer, type IncomingMessage, type Server } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { lstat, rm } from 'node:fs/promises';
import { JSONRPCClient } from 'json-rpc-2.0';
import WebSocket, { WebSocketServer } from 'ws';
import { OpsyncError } from '../oplog/opsync-error.js';
import type { JsonObject } from '../util/json.js';
import { LIMITS } from '../util/limits.js';
import type { Dispatcher } from './dispatcher.js';
import type { Connection } from './method.js';

/**
 * JSON-RPC over WebSocket: the server the daemon exposes and the client the CLI, the demo and
 * the tests use. The only module that imports `ws` (proposals/rpc.md §Transport).
 *
 * - listens on host:port (port 0 picks one) or a Unix socket path;
 * - refuses the upgrade with 401 unless `Authorization: Bearer <token>` matches, so no method
 *   runs for an unauthenticated client;
 * - frames above LIMITS.maxFrameBytes close the connection (1009); binary frames are answered
 *   as invalid requests; a client that disconnects mid-frame only loses its own connection;
 * - a client that does not keep up is held back, never buffered without bound (`Peer`): its
 *   requests wait while its answers are unread, and its notifications coalesce;
 * - both ends cork their socket for the rest of a turn of the event loop when they send, so the
 *   frames of one turn (the answers of one group commit, a burst of pipelined calls) leave in
 *   one write.
 */
export type Listen = { readonly host: string; readonly port: number } | { readonly socketPath: string };

export interface RpcServer {
  /** `ws://host:port` or `ws+unix:///path`. */
  readonly url: string;
  readonly stats: TransportStats;
  /** Sends a notification to every connection that `filter` accepts. */
  notify(method: string, params: JsonObject, filter: (connection: Connection) => boolean): void;
  close(): Promise<void>;
}

export interface TransportStats {
  connections: number;
  rejected_auth: number;
  /** Upgrades refused for a foreign `Origin` or `Host` (403). */
  rejected_origin: number;
  /** Connections closed at once because too many were waiting to authenticate. */
  rejected_unauthenticated: number;
  oversize_frames: number;
  /** Times a connection's requests had to wait for its client to read its answers. */
  held_back: number;
  /** Notifications replaced by a newer one of the same method before a lagging client read them. */
  coalesced_notifications: number;
}

/** Per-connection limits (LIMITS by default; tests use small ones). */
export type ConnectionLimits = { readonly [K in 'maxInFlight' | 'maxUnsentBytes']: number };

/** Who may connect, beyond holding the token (proposals/rpc.md §Transport). */
export interface AccessOptions {
  /** Browser origins allowed to connect (`--allow-origin`); a request carrying any other `Origin` is refused (403). */
  readonly allowOrigins: readonly string[];
  readonly log?: TransportLog | undefined;
}

export interface TransportLog {
  warn(fields: object, message: string): void;
}

/**
 * Connections at most, authenticated or not; past it the OS queue holds new ones and Node drops
 * them. A daemon serves a few hosts; a thousand is far above any real use.
 */
const MAX_CONNECTIONS = 1024;
/** Connections that have not completed an authenticated upgrade, at most: past it new ones are closed at once. */
const MAX_UNAUTHENTICATED = 64;
/** How long a connection may take to complete its authenticated upgrade before it is closed. */
const HANDSHAKE_MS = 10_000;

export async function startRpcServer(
  listen: Listen,
  token: string,
  dispatcher: Dispatcher,
  limits: ConnectionLimits = LIMITS,
  access: AccessOptions = { allowOrigins: [] },
): Promise<RpcServer> {
  const expected = Buffer.from(token);
  const http: Server = createServer((_request, response) => {
    response.writeHead(426, { 'content-type': 'text/plain' }).end('opsync speaks JSON-RPC over WebSocket only.\n');
  });
  http.maxConnections = MAX_CONNECTIONS;
  http.on('drop', (data?: { remoteAddress?: string }) =>
    warn('connections', { limit: MAX_CONNECTIONS, peer: data?.remoteAddress ?? 'local' }, 'too many connections: dropping new ones'),
  );
  const wss = new WebSocketServer({ noServer: true, maxPayload: LIMITS.maxFrameBytes });
  const peers = new Map<WebSocket, Peer>();
  const stats: TransportStats = {
    connections: 0,
    rejected_auth: 0,
    rejected_origin: 0,
    rejected_unauthenticated: 0,
    oversize_frames: 0,
    held_back: 0,
    coalesced_notifications: 0,
  };
  const warn = throttledWarn(access.log);
  const pending = new Map<Socket, NodeJS.Timeout>();
  let nextId = 1;
  let hosts: ReadonlySet<string> | null = null;

  // Until it completes an authenticated upgrade a connection is a stranger's: few at once, briefly.
  http.on('connection', (socket: Socket) => {
    if (pending.size >= MAX_UNAUTHENTICATED) {
      stats.rejected_unauthenticated++;
      warn(
        'capacity',
        { limit: MAX_UNAUTHENTICATED, peer: socket.remoteAddress ?? 'local' },
        'too many unauthenticated connections at once: closing new ones',
      );
      socket.destroy();
      return;
    }
    const timer = setTimeout(() => socket.destroy(), HANDSHAKE_MS);
    timer.unref();
    pending.set(socket, timer);
    socket.once('close', () => {
      clearTimeout(timer);
      pending.delete(socket);
    });
  });

  http.on('upgrade', (request: IncomingMessage, socket: Socket, head) => {
    const refusal = refuse(request, expected, access.allowOrigins, hosts);
    if (refusal) {
      if (refusal.status === 401) stats.rejected_auth++;
      else stats.rejected_origin++;
      warn(
        `refused-${refusal.status}`,
        { peer: socket.remoteAddress ?? 'local', status: refusal.status, why: refusal.why },
        'refused a connection',
      );
      // Destroyed once the answer is written: a client that never closes its end cannot hold the socket.
      socket.end(
        `HTTP/1.1 ${refusal.status} ${refusal.status === 401 ? 'Unauthorized\r\nWWW-Authenticate: Bearer' : 'Forbidden'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`,
        () => socket.destroy(),
      );
      return;
    }
    clearTimeout(pending.get(socket));
    pending.delete(socket);
    wss.handleUpgrade(request, socket, head, (ws) => serve(ws, socket));
  });

  function serve(ws: WebSocket, socket: Socket): void {
    const connection: Connection = { id: nextId++, subscribed: false };
    const peer = new Peer(ws, socket, limits, (text) => dispatcher.handle(text, connection), connection, stats);
    peers.set(ws, peer);
    stats.connections = peers.size;
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (isBinary)
        peer.send(
          JSON.stringify({
            jsonrpc: '2.0',
            id: null,
            error: { code: -32600, message: 'Invalid Request: send JSON-RPC as text frames', data: { code: 'invalid_request' } },
          }),
        );
      else peer.request(rawText(data));
    });
    ws.on('error', (error: Error & { code?: string }) => {
      if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') stats.oversize_frames++;
    });
    ws.on('close', () => {
      peers.delete(ws);
      stats.connections = peers.size;
    });
  }

  await listenOn(http, listen);
  const address = http.address();
  const url = serverUrl(listen, typeof address === 'object' && address ? address.port : null);
  hosts = 'host' in listen ? allowedHosts(listen.host, typeof address === 'object' && address ? address.port : listen.port) : null;
  return {
    url,
    stats,
    notify(method, params, filter) {
      const text = JSON.stringify({ jsonrpc: '2.0', method, params });
      for (const peer of peers.values()) if (filter(peer.connection)) peer.notify(method, text);
    },
    async close() {
      for (const ws of peers.keys()) ws.close(1001, 'daemon shutting down');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
      if ('socketPath' in listen) await rm(listen.socketPath, { force: true });
    },
  };
}

/**
 * Why an upgrade request is refused, or null: the token (401), compared in constant time, with
 * the scheme in any case (RFC 7235); a browser page from an origin not allowed (403: a page the
 * user visits could otherwise drive the daemon, cross-site WebSocket hijacking); a `Host` that is
 * not the address the daemon listens on (403: DNS rebinding). `hosts` null: a Unix socket, or an
 * address that takes any name.
 */
function refuse(
  request: IncomingMessage,
  token: Buffer,
  origins: readonly string[],
  hosts: ReadonlySet<string> | null,
): { status: 401 | 403; why: string } | null {
  const [scheme, given, ...rest] = (request.headers.authorization ?? '').split(' ');
  const presented = Buffer.from(given ?? '');
  if (scheme?.toLowerCase() !== 'bearer' || rest.length > 0 || presented.length !== token.length || !timingSafeEqual(presented, token))
    return { status: 401, why: 'no valid token' };
  const origin = request.headers.origin;
  if (origin !== undefined && !origins.includes(origin))
    return { status: 403, why: `origin ${origin.slice(0, 200)} is not allowed (--allow-origin)` };
  const host = (request.headers.host ?? '').toLowerCase();
  if (hosts && !hosts.has(host)) return { status: 403, why: `host ${host.slice(0, 200)} is not the address this daemon listens on` };
  return null;
}

/** The `Host` values a client of `host:port` may send: the address itself, and for loopback the usual names of it; with or without the port. */
function allowedHosts(host: string, port: number): ReadonlySet<string> | null {
  if (host === '0.0.0.0' || host === '::') return null;
  const names = new Set([host.includes(':') ? `[${host}]` : host]);
  if (host === '127.0.0.1' || host === '::1' || host === 'localhost')
    for (const name of ['localhost', '127.0.0.1', '[::1]']) names.add(name);
  // The name alone too: a client may leave the port out, and the names are this host's own.
  return new Set([...names].flatMap((name) => [`${name}:${port}`.toLowerCase(), name.toLowerCase()]));
}

/** Logs a kind of refusal at most once per minute, with how many were not logged since. */
function throttledWarn(log: TransportLog | undefined): (kind: string, fields: object, message: string) => void {
  const last = new Map<string, { at: number; since: number }>();
  return (kind, fields, message) => {
    if (!log) return;
    const now = Date.now();
    const seen = last.get(kind);
    if (seen && now - seen.at < 60_000) {
      seen.since++;
      return;
    }
    log.warn({ ...fields, not_logged_since: seen?.since ?? 0 }, message);
    last.set(kind, { at: now, since: 0 });
  };
}

/** The URL clients use to reach a server listening on `listen` (`port`: the one it got, for port 0); an IPv6 host goes in brackets. */
export function serverUrl(listen: Listen, port: number | null): string {
  if ('socketPath' in listen) return `ws+unix://${listen.socketPath}`;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  return `ws://${host}:${port ?? listen.port}`;
}

/** Requests of one connection started in one turn of the event loop, at most (see Peer). */
const MAX_STARTS_PER_TURN = 32;

/**
 * One client connection's traffic. A client that does not keep up is held back, never buffered
 * without bound:
 * - requests start in arrival order, at most `maxInFlight` in progress, none while more than
 *   `maxUnsentBytes` of answers wait unread, and at most MAX_STARTS_PER_TURN per turn of the
 *   event loop — one socket read can hold a thousand requests and a handler builds its answer
 *   before it is sent, so the answers of one turn must be counted before more start. While
 *   requests wait, the socket is not read, and nothing is lost: once the client reads, every
 *   answer arrives, in order;
 * - notifications cannot wait for a client, so while it lags they coalesce: a newer one of a
 *   method replaces the one not yet sent, which goes out once the client has read.
 * Output is corked for the rest of a turn, so the frames of one turn leave in one write.
 */
class Peer {
  private waiting: string[] = [];
  private next = 0;
  private inFlight = 0;
  private startedThisTurn = 0;
  /** The client lagged at the last look (so that each hold-back is counted once). */
  private lagging = false;
  /** Notifications held while the client lags, the newest per method. */
  private readonly coalesced = new Map<string, string>();
  private readonly cork: () => void;

  constructor(
    private readonly ws: WebSocket,
    socket: Socket,
    private readonly limits: ConnectionLimits,
    private readonly handle: (text: string) => Promise<string | null>,
    readonly connection: Connection,
    private readonly stats: TransportStats,
  ) {
    this.cork = corked(socket);
    socket.on('drain', this.admit);
  }

  send(text: string): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.cork();
    this.ws.send(text);
  }

  request(text: string): void {
    this.waiting.push(text);
    this.admit();
  }

  notify(method: string, text: string): void {
    if (this.coalesced.size === 0 && !this.lags()) this.send(text);
    else {
      if (this.coalesced.has(method)) this.stats.coalesced_notifications++;
      this.coalesced.set(method, text);
    }
  }

  /** More than `maxUnsentBytes` of output wait for the client to read them. */
  private lags(): boolean {
    return this.ws.bufferedAmount > this.limits.maxUnsentBytes;
  }

  /** Sends held notifications and starts waiting requests as far as the client keeps up; runs on every change. */
  private readonly admit = (): void => {
    let lagging = this.lags();
    if (lagging && !this.lagging) this.stats.held_back++;
    if (!lagging && this.coalesced.size > 0) {
      for (const text of this.coalesced.values()) this.send(text);
      this.coalesced.clear();
    }
    while (
      !lagging &&
      this.next < this.waiting.length &&
      this.inFlight < this.limits.maxInFlight &&
      this.startedThisTurn < MAX_STARTS_PER_TURN
    ) {
      this.start(this.waiting[this.next++]!);
      lagging = this.lags();
    }
    this.lagging = lagging;
    const backlog = this.waiting.length - this.next;
    if (backlog === 0) {
      this.waiting = [];
      this.next = 0;
    }
    // Reading on would only queue more: stop while the client lags or an in-flight's worth waits.
    const stop = lagging || backlog >= this.limits.maxInFlight;
    if (stop && !this.ws.isPaused) this.ws.pause();
    else if (!stop && this.ws.isPaused) this.ws.resume();
  };

  private start(text: string): void {
    if (this.startedThisTurn++ === 0) setImmediate(this.nextTurn);
    this.inFlight++;
    void this.handle(text).then((answer) => {
      this.inFlight--;
      if (answer !== null) this.send(answer);
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
      if (error.code === 'EADDRINUSE')
        reject(
          new OpsyncError('config_invalid', `${where} is already in use; choose another --listen address (port 0 picks a free one).`, {
            listen: where,
          }),
        );
      else if (error.code === 'EACCES') reject(new OpsyncError('config_invalid', `Not allowed to listen on ${where}.`, { listen: where }));
      else reject(new OpsyncError('config_invalid', `Cannot listen on ${where}: ${error.message}.`, { listen: where }));
    });
    if ('socketPath' in listen) http.listen(listen.socketPath, () => resolve());
    else http.listen(listen.port, listen.host, () => resolve());
  });
}

/**
 * A socket file nobody answers on is left over from a crash: remove it. A live one is in use.
 * Anything else at the path (a file, a folder, a link) is not this daemon's to remove.
 */
async function clearStaleSocket(path: string): Promise<void> {
  const seen = await lstat(path).catch(() => null);
  if (seen === null) return;
  if (!seen.isSocket()) {
    throw new OpsyncError(
      'config_invalid',
      `--listen ${path}: something that is not a socket stands there; opsync replaces only a socket a crashed daemon left behind. Choose another path.`,
      { listen: path },
    );
  }
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

function rawText(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
