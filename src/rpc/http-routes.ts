import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { rm } from 'node:fs/promises';
import { listenOn, type Listen } from './listen.js';

/**
 * The plain HTTP requests the daemon answers beside its WebSocket (proposals/daemon.md §HTTP):
 * probes, metrics and the status page. A route names who may ask (`access`) and answers with a
 * status, a content type and a body; the server checks the access before it calls the route.
 *
 * - `token`: the request carries the daemon's bearer token (probes, metrics — Prometheus sends one);
 * - `page`: the status page's session cookie, or the one-time code that opens one;
 * - `public`: static files holding nothing of the user's (the page's script and style).
 */
export type RouteAccess = 'token' | 'page' | 'public';

export interface HttpAnswer {
  readonly status: number;
  readonly type: string;
  readonly body: string;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface HttpRoute {
  readonly access: RouteAccess;
  answer(request: IncomingMessage): HttpAnswer | Promise<HttpAnswer>;
}

/** Routes by path (without the query). */
export type HttpRoutes = ReadonlyMap<string, HttpRoute>;

/** Why a request is refused (401 or 403, with a reason for the log), or null when it may be answered. */
export type Gatekeeper = (request: IncomingMessage, access: RouteAccess) => { status: 401 | 403; why: string } | null;

/** Headers every answer carries: nothing is cached, framed, sniffed or sent on as a referrer. */
const SAFE_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

export function json(status: number, body: unknown): HttpAnswer {
  return { status, type: 'application/json', body: JSON.stringify(body) + '\n' };
}

/**
 * Answers a plain HTTP request from `routes`: GET or HEAD of a known path, past the gatekeeper;
 * anything else is 426 (this is a WebSocket server). A route that throws answers 500 without
 * saying why (the daemon logs it).
 */
export async function answerHttp(
  request: IncomingMessage,
  response: ServerResponse,
  routes: HttpRoutes,
  gatekeeper: Gatekeeper,
  onError: (error: unknown) => void,
): Promise<void> {
  const route = routes.get(pathOf(request));
  if (!route || (request.method !== 'GET' && request.method !== 'HEAD')) {
    response.writeHead(426, { ...SAFE_HEADERS, 'content-type': 'text/plain' }).end('opsync speaks JSON-RPC over WebSocket only.\n');
    return;
  }
  const refused = gatekeeper(request, route.access);
  if (refused) {
    const challenge = refused.status === 401 && route.access === 'token' ? { 'www-authenticate': 'Bearer' } : {};
    response.writeHead(refused.status, { ...SAFE_HEADERS, ...challenge, 'content-type': 'text/plain' }).end(`${refused.why}\n`);
    return;
  }
  let answer: HttpAnswer;
  try {
    answer = await route.answer(request);
  } catch (error) {
    onError(error);
    answer = { status: 500, type: 'text/plain', body: 'The daemon could not answer this request; its log says why.\n' };
  }
  response.writeHead(answer.status, { ...SAFE_HEADERS, ...answer.headers, 'content-type': answer.type });
  response.end(request.method === 'HEAD' ? undefined : answer.body);
}

export function pathOf(request: IncomingMessage): string {
  return (request.url ?? '').split('?')[0]!;
}

/**
 * A plain HTTP server answering `routes` with no token asked (`--metrics-listen`): for an address
 * only the operator's network reaches, where Prometheus scrapes without one. Page routes are not
 * served there.
 */
export async function startPlainHttp(
  listen: Listen,
  routes: HttpRoutes,
  onError: (error: unknown) => void,
): Promise<{ readonly url: string; close(): Promise<void> }> {
  const open = new Map([...routes].filter(([, route]) => route.access !== 'page'));
  const http = createServer((request, response) => void answerHttp(request, response, open, () => null, onError));
  await listenOn(http, listen);
  const address = http.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url:
      'socketPath' in listen
        ? `http+unix://${listen.socketPath}`
        : `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}`,
    close: async () => {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
      if ('socketPath' in listen) await rm(listen.socketPath, { force: true });
    },
  };
}
