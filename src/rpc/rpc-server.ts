import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { lstat, rm } from 'node:fs/promises';
import WebSocket, { WebSocketServer } from 'ws';
import { OpsyncError } from '../util/opsync-error.js';
import type { JsonObject } from '../util/json.js';
import { LIMITS } from '../util/limits.js';
import type { RpcEndpoint } from './rpc-endpoint.js';
import type { Connection } from './method.js';
import { Peer, type ConnectionLimits, type PeerSocket, type PeerStats } from './peer.js';
import { corked, rawText } from './ws-frames.js';

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
export type Listen = { readonly host: string; readonly port: number } | { readonly socketPath: string };

export interface RpcServer {
  /** `ws://host:port` or `ws+unix:///path`. */
  readonly url: string;
  readonly stats: TransportStats;
  /** Sends a notification to every connection that `filter` accepts. */
  notify(method: string, params: JsonObject, filter: (connection: Connection) => boolean): void;
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
  /** `/healthz` and `/readyz` over HTTP, behind the token like every request (proposals/daemon.md §Health). */
  readonly probes?: Probes | undefined;
}

/** What a probe answers: its HTTP status (200 ok, 503 not) and a JSON body that says why. */
export interface ProbeAnswer {
  readonly ok: boolean;
  readonly body: JsonObject;
}

export interface Probes {
  /** The process answers. */
  health(): ProbeAnswer;
  /** It takes work: its journal is open and writable. */
  ready(): ProbeAnswer;
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
  endpoint: RpcEndpoint,
  limits: ConnectionLimits = LIMITS,
  access: AccessOptions = { allowOrigins: [] },
): Promise<RpcServer> {
  const expected = Buffer.from(token);
  const http: Server = createServer((request, response) =>
    answerProbe(request, response, access.probes, (r) => {
      const refusal = refuse(r, expected, access.allowOrigins, hosts);
      if (refusal) noteRefusal(r.socket, refusal, stats, warn);
      return refusal;
    }),
  );
  http.maxConnections = MAX_CONNECTIONS;
  http.on('drop', (data?: { remoteAddress?: string }) =>
    warn('connections', { limit: MAX_CONNECTIONS, peer: data?.remoteAddress ?? 'local' }, 'too many connections: dropping new ones'),
  );
  const wss = new WebSocketServer({ noServer: true, maxPayload: LIMITS.maxFrameBytes });
  const peers = new Map<WebSocket, Peer>();
  const stats = zeroStats();
  const warn = throttledWarn(access.log);
  let nextId = 1;
  let hosts: ReadonlySet<string> | null = null;

  const strangers = limitStrangers(http, stats, warn);

  http.on('upgrade', (request: IncomingMessage, socket: Socket, head) => {
    const refusal = refuse(request, expected, access.allowOrigins, hosts);
    if (refusal) {
      answerRefusal(socket, refusal, stats, warn);
      return;
    }
    strangers.admitted(socket);
    wss.handleUpgrade(request, socket, head, (ws) => {
      const connection: Connection = { id: nextId++, subscribed: false };
      servePeer(ws, new Peer(peerSocket(ws, socket), limits, (text) => endpoint.handle(text, connection), connection, stats), peers, stats);
    });
  });

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

type Warn = ReturnType<typeof throttledWarn>;

/**
 * A plain HTTP request: `GET /healthz` or `/readyz`, behind the same token, origin and host checks
 * as an upgrade (401 or 403), answered 200 or 503 with a JSON body; anything else is 426.
 */
function answerProbe(
  request: IncomingMessage,
  response: ServerResponse,
  probes: Probes | undefined,
  refusal: (request: IncomingMessage) => { status: 401 | 403 } | null,
): void {
  const path = (request.url ?? '').split('?')[0];
  const which = path === '/healthz' ? 'health' : path === '/readyz' ? 'ready' : null;
  if (!probes || !which || (request.method !== 'GET' && request.method !== 'HEAD')) {
    response.writeHead(426, { 'content-type': 'text/plain' }).end('opsync speaks JSON-RPC over WebSocket only.\n');
    return;
  }
  const refused = refusal(request);
  if (refused) {
    response.writeHead(refused.status, refused.status === 401 ? { 'www-authenticate': 'Bearer' } : {}).end();
    return;
  }
  const probe = which === 'health' ? probes.health() : probes.ready();
  response.writeHead(probe.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(probe.body) + '\n');
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

/** Serves one authenticated WebSocket: its text frames are requests to `peer`; a binary frame is refused. */
function servePeer(ws: WebSocket, peer: Peer, peers: Map<WebSocket, Peer>, stats: TransportStats): void {
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
