import type { IncomingMessage } from 'node:http';
import type { LeaseRecord } from '../lease/lease-rules.js';
import { json, type HttpAnswer, type HttpRoute } from '../rpc/http-routes.js';
import { PageAccess } from '../rpc/page-access.js';
import type { SessionStatus } from '../session/session-reports.js';
import type { LogEntry } from './recent-log.js';
import { PAGE_CSS, PAGE_HTML, PAGE_JS } from './status-page-assets.js';

/** Leases and conversations shown at most. */
const SHOWN = 50;

export interface PageSources {
  status(): SessionStatus;
  facts(): { readonly version: string; readonly relay: string; readonly lease_backend: string; readonly uptime_ms: number };
  leases(limit: number): Promise<{ records: LeaseRecord[]; now_ms: number }>;
  conversations(): Array<{ conversation_id: string; turns: number; last_ms: number }>;
  errors(): readonly LogEntry[];
  rates(): { interval_ms: number; series: Record<string, number[]> };
  now(): number;
}

/**
 * The status page (proposals/daemon.md §Status page): read-only, one HTML page whose script polls
 * `/status/data`. `/status/open?code=` trades a one-time code for the page's cookie and sends the
 * browser on to `/status`, so the code leaves the address bar and no token is ever in a URL.
 */
export function statusPageRoutes(access: PageAccess, sources: PageSources): Array<[string, HttpRoute]> {
  const file = (type: string, body: string): HttpRoute => ({ access: 'public', answer: () => ({ status: 200, type, body }) });
  return [
    ['/status/open', { access: 'public', answer: (request) => open(access, request) }],
    [
      '/status',
      {
        access: 'page',
        answer: () => ({
          status: 200,
          type: 'text/html; charset=utf-8',
          body: PAGE_HTML,
          headers: {
            'content-security-policy':
              "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
          },
        }),
      },
    ],
    ['/status/data', { access: 'page', answer: async () => json(200, await pageData(sources)) }],
    ['/status/app.js', file('text/javascript; charset=utf-8', PAGE_JS)],
    ['/status/app.css', file('text/css; charset=utf-8', PAGE_CSS)],
  ];
}

function open(access: PageAccess, request: IncomingMessage): HttpAnswer {
  const code = new URL(request.url ?? '/', 'http://localhost').searchParams.get('code') ?? '';
  const session = code.length <= 64 ? access.redeem(code) : null;
  if (session === null)
    return {
      status: 403,
      type: 'text/plain; charset=utf-8',
      body: 'This link was used already or has expired. Run `opsync status --web` for a new one.\n',
    };
  return { status: 303, type: 'text/plain', body: '', headers: { location: '/status', 'set-cookie': PageAccess.cookie(session) } };
}

async function pageData(sources: PageSources) {
  const status = sources.status();
  const leases = await sources.leases(SHOWN);
  const now = sources.now();
  return {
    ...sources.facts(),
    device_id: status.device_id,
    now_ms: now,
    counts: status.counts,
    last_error: status.last_error,
    devices: status.roster.map((entry) => ({ ...entry, self: entry.device_id === status.device_id })),
    leases: leases.records.map((record) => ({ ...record, live: record.holder !== null && record.expires_at_ms > leases.now_ms })),
    conversations: sources
      .conversations()
      .sort((a, b) => b.last_ms - a.last_ms)
      .slice(0, SHOWN),
    errors: sources.errors(),
    rates: sources.rates(),
  };
}
