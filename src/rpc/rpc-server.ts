import { createServer, type IncomingMessage, type Server } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import WebSocket, { WebSocketServer } from 'ws';
import type { JsonObject } from '../util/json.js';
import { LIMITS } from '../util/limits.js';
import type { RpcEndpoint } from './rpc-endpoint.js';
import type { Connection } from './method.js';
import { Peer, type ConnectionLimits, type Merge, type PeerSocket, type PeerStats } from './peer.js';
import { corked, rawText } from './ws-frames.js';
import { answerHttp, type Gatekeeper, type HttpRoutes, type RouteAccess } from './http-routes.js';
import type { PageAccess } from './page-access.js';
import { listenOn, type Listen } from './listen.js';

/**
 * The JSON-RPC server over WebSocket that the daemon exposes (proposals/rpc.md §Transport). With
 * rpc-client.ts, the only modules that import `ws`.
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
export type { Listen };

export interface RpcServer {
  /** `ws://host:port` or `ws+unix:///path`. */
  readonly url: string;
  readonly stats: TransportStats;
  /**
   * Sends a notification to every connection `paramsFor` gives params for (null: not to this
   * one); a connection that lags holds one per method, which `merge` folds newer ones into.
   */
  notify(method: string, paramsFor: (connection: Connection) => JsonObject | null, merge?: Merge): void;
  close(): Promise<void>;
}

export interface TransportStats extends PeerStats {
  connections: number;
  rejected_auth: number;
  /** Upgrades refused for a foreign `Origin` or `Host` (403). */
  rejected_origin: number;
  /** Connections closed at once because too many were waiting to authenticate. */
  rejected_unauthenticated: number;
  oversize_frames: number;
}

/** Who may connect, beyond holding the token (proposals/rpc.md §Transport). */
export interface AccessOptions {
  /** Browser origins allowed to connect (`--allow-origin`); a request carrying any other `Origin` is refused (403). */
  readonly allowOrigins: readonly string[];
  readonly log?: TransportLog | undefined;
  /** Plain HTTP requests answered beside the WebSocket: probes, metrics, the status page (proposals/daemon.md §HTTP). */
  readonly routes?: HttpRoutes | undefined;
  /** Who holds a status page session (routes of `page` access). */
  readonly pages?: PageAccess | undefined;
}

export interface TransportLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
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
  endpoint: RpcEndpoint,
  limits: ConnectionLimits = LIMITS,
  access: AccessOptions = { allowOrigins: [] },
): Promise<RpcServer> {
  const admission: Admission = { token: Buffer.from(token), origins: access.allowOrigins, hosts: null, pages: access.pages };
  const gatekeeper: Gatekeeper = (request, kind) => {
    const refusal = refusalOf(request, kind, admission);
    if (refusal) noteRefusal(request.socket, refusal, stats, warn);
    return refusal;
  };
  const http = httpServer(access, gatekeeper, (...args) => warn(...args));
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: LIMITS.maxFrameBytes,
    handleProtocols: (offered: Set<string>) => (offered.has(RPC_PROTOCOL) ? RPC_PROTOCOL : false),
  });
  const peers = new Map<WebSocket, Peer>();
  const stats = zeroStats();
  const warn = throttledWarn(access.log);
  let nextId = 1;

  const strangers = limitStrangers(http, stats, warn);

  http.on('upgrade', (request: IncomingMessage, socket: Socket, head) => {
    const refusal = refusalOf(request, 'token', admission);
    if (refusal) {
      answerRefusal(socket, refusal, stats, warn);
      return;
    }
    strangers.admitted(socket);
    wss.handleUpgrade(request, socket, head, (ws) => {
      const connection: Connection = { id: nextId++, subscribed: false, surfaces: null };
      const peer = new Peer(peerSocket(ws, socket), limits, (text) => endpoint.handle(text, connection), connection, stats);
      servePeer(ws, peer, { peers, stats, log: access.log, address: socket.remoteAddress ?? 'local' });
    });
  });

  await listenOn(http, listen);
  const address = http.address();
  const port = typeof address === 'object' && address ? address.port : null;
  admission.hosts = 'host' in listen ? allowedHosts(listen.host, port ?? listen.port) : null;
  return {
    url: serverUrl(listen, port),
    stats,
    notify(method, paramsFor, merge) {
      for (const peer of peers.values()) {
        const params = paramsFor(peer.connection);
        if (params) peer.notify(method, params, merge);
      }
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

type Warn = ReturnType<typeof throttledWarn>;

/** The HTTP server under the WebSocket: it answers the plain requests from `access.routes` and holds at most MAX_CONNECTIONS. */
function httpServer(access: AccessOptions, gatekeeper: Gatekeeper, warn: Warn): Server {
  const http = createServer(
    (request, response) =>
      void answerHttp(request, response, access.routes ?? new Map(), gatekeeper, (error) =>
        access.log?.error({ err: error, path: request.url?.slice(0, 200) }, 'an HTTP request failed unexpectedly'),
      ),
  );
  http.maxConnections = MAX_CONNECTIONS;
  http.on('drop', (data?: { remoteAddress?: string }) =>
    warn('connections', { limit: MAX_CONNECTIONS, peer: data?.remoteAddress ?? 'local' }, 'too many connections: dropping new ones'),
  );
  return http;
}

function zeroStats(): TransportStats {
  return {
    connections: 0,
    rejected_auth: 0,
    rejected_origin: 0,
    rejected_unauthenticated: 0,
    oversize_frames: 0,
    held_back: 0,
    coalesced_notifications: 0,
  };
}

/**
 * Until it completes an authenticated upgrade a connection is a stranger's: at most
 * MAX_UNAUTHENTICATED at once, each for at most HANDSHAKE_MS; past the cap new ones are closed.
 */
function limitStrangers(http: Server, stats: TransportStats, warn: Warn): { admitted(socket: Socket): void } {
  const pending = new Map<Socket, NodeJS.Timeout>();
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
  return {
    admitted(socket) {
      clearTimeout(pending.get(socket));
      pending.delete(socket);
    },
  };
}

type Refusal = { status: 401 | 403; why: string };

/** Counts a refused request (upgrade or probe) and logs it, throttled, with the peer's address. */
function noteRefusal(socket: Socket, refusal: Refusal, stats: TransportStats, warn: Warn): void {
  if (refusal.status === 401) stats.rejected_auth++;
  else stats.rejected_origin++;
  warn(
    `refused-${refusal.status}`,
    { peer: socket.remoteAddress ?? 'local', status: refusal.status, why: refusal.why },
    'refused a connection',
  );
}

/** Answers a refused upgrade with its status, and destroys the socket once the answer is written. */
function answerRefusal(socket: Socket, refusal: Refusal, stats: TransportStats, warn: Warn): void {
  noteRefusal(socket, refusal, stats, warn);
  // Destroyed once the answer is written: a client that never closes its end cannot hold the socket.
  socket.end(
    `HTTP/1.1 ${refusal.status} ${refusal.status === 401 ? 'Unauthorized\r\nWWW-Authenticate: Bearer' : 'Forbidden'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`,
    () => socket.destroy(),
  );
}

/**
 * Serves one authenticated WebSocket: its text frames are requests to `peer`; a binary frame is
 * refused. Its opening and closing are logged with the client's address.
 */
function servePeer(
  ws: WebSocket,
  peer: Peer,
  { peers, stats, log, address }: { peers: Map<WebSocket, Peer>; stats: TransportStats; log: TransportLog | undefined; address: string },
): void {
  const who = { peer: address, connection: peer.connection.id };
  log?.info(who, 'a client connected');
  ws.once('close', (code: number) => log?.info({ ...who, code }, 'a client disconnected'));
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

/** What a request must match to be answered: the token, the origins and host names allowed, a page session. */
interface Admission {
  readonly token: Buffer;
  readonly origins: readonly string[];
  /** Null: a Unix socket, or an address that takes any name. Set once the server listens. */
  hosts: ReadonlySet<string> | null;
  readonly pages: PageAccess | undefined;
}

/** Why a request of `kind` (an upgrade is `token`) is refused, or null. */
function refusalOf(request: IncomingMessage, kind: RouteAccess, admission: Admission): Refusal | null {
  const { token, origins, hosts, pages } = admission;
  if (kind === 'token') return refuse(request, token, origins, hosts);
  if (kind === 'page' && !pages?.admits(request))
    return foreignHost(request, hosts) ?? { status: 401, why: 'Open the status page with the link `opsync status --web` prints.' };
  return foreignHost(request, hosts);
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
  const presented = Buffer.from(presentedToken(request) ?? '');
  if (presented.length !== token.length || !timingSafeEqual(presented, token)) return { status: 401, why: 'no valid token' };
  const origin = request.headers.origin;
  if (origin !== undefined && !origins.includes(origin))
    return { status: 403, why: `origin ${origin.slice(0, 200)} is not allowed (--allow-origin)` };
  return foreignHost(request, hosts);
}

/** What a browser's `WebSocket` offers as a subprotocol beside `opsync.v1` to carry the token, which it cannot put in a header. */
export const BEARER_PROTOCOL = 'opsync.bearer.';
/** The subprotocol the server answers a browser with: never the one carrying the token. */
export const RPC_PROTOCOL = 'opsync.v1';

/**
 * The token a request presents: `Authorization: Bearer <token>` (the scheme in any case, RFC
 * 7235), or else — from a browser, whose `WebSocket` cannot set headers — the subprotocol
 * `opsync.bearer.<token>` offered with `opsync.v1` (proposals/rpc.md §Transport).
 */
function presentedToken(request: IncomingMessage): string | null {
  const authorization = request.headers.authorization;
  if (authorization !== undefined) {
    const [scheme, given, ...rest] = authorization.split(' ');
    return scheme?.toLowerCase() === 'bearer' && rest.length === 0 ? (given ?? null) : null;
  }
  const offered = (request.headers['sec-websocket-protocol'] ?? '').split(',').map((protocol) => protocol.trim());
  if (!offered.includes(RPC_PROTOCOL)) return null;
  return offered.find((protocol) => protocol.startsWith(BEARER_PROTOCOL))?.slice(BEARER_PROTOCOL.length) ?? null;
}

/** A `Host` that is not the address the daemon listens on (403: DNS rebinding), or null. */
function foreignHost(request: IncomingMessage, hosts: ReadonlySet<string> | null): Refusal | null {
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

/** A WebSocket connection as a peer's socket port. */
function peerSocket(ws: WebSocket, socket: Socket): PeerSocket {
  const cork = corked(socket);
  return {
    get open() {
      return ws.readyState === WebSocket.OPEN;
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
    send(text) {
      cork();
      ws.send(text);
    },
    get paused() {
      return ws.isPaused;
    },
    pause: () => ws.pause(),
    resume: () => ws.resume(),
    onDrain: (listener) => void socket.on('drain', listener),
  };
}
