import { lstat } from 'node:fs/promises';
import type { LeaseBook } from '../lease/lease-book.js';
import type { Relay } from '../../relay/port/relay.js';
import { json, type HttpRoute, type HttpRoutes } from '../rpc/http-routes.js';
import type { PageAccess } from '../rpc/page-access.js';
import type { EndpointStats } from '../rpc/rpc-endpoint.js';
import type { TransportStats } from '../rpc/rpc-server.js';
import type { Session } from '../session/session.js';
import { daemonMetrics } from './metrics.js';
import type { RateHistory } from './rate-history.js';
import type { RecentLog } from './recent-log.js';
import { statusPageRoutes } from './status-page.js';

/** What the daemon's HTTP routes read. */
export interface RouteSources {
  readonly session: Session;
  readonly relay: Relay;
  readonly leases: LeaseBook;
  readonly journalPath: string;
  readonly recent: RecentLog;
  readonly rates: RateHistory;
  readonly pages: PageAccess;
  readonly relayKind: 'dir' | 'postgres';
  readonly version: string;
  readonly startedAt: number;
  rpc(): { readonly endpoint: EndpointStats; readonly transport: TransportStats | null };
}

/**
 * Every plain HTTP route of the daemon (proposals/daemon.md §HTTP): `/healthz` (the process
 * answers), `/readyz` (it takes work: its journal is open and writable; 503 once a journal write
 * failed, naming what keeps it from the relay), `/metrics` (Prometheus text) and the status page.
 */
export function daemonRoutes(sources: RouteSources): HttpRoutes {
  const { session, relay, leases, version } = sources;
  const metrics = daemonMetrics({
    stats: session.stats,
    status: () => session.status(),
    rpc: () => sources.rpc(),
    leasesHeld: (nowMs) => leases.heldCount(nowMs),
    journalBytes: async () => (await lstat(sources.journalPath).catch(() => null))?.size ?? 0,
    relayBytes: () => relay.bytes(),
    info: { version, device: session.device, relay: sources.relayKind, lease_backend: leases.kind },
  });
  const routes: Array<[string, HttpRoute]> = [
    ['/healthz', { access: 'token', answer: () => json(200, { alive: true, version }) }],
    [
      '/readyz',
      {
        access: 'token',
        answer: () => {
          const readiness = session.readiness();
          return json(readiness.ready ? 200 : 503, readiness);
        },
      },
    ],
    ['/metrics', { access: 'token', answer: async () => ({ status: 200, type: metrics.contentType, body: await metrics.text() }) }],
    ...statusPageRoutes(sources.pages, {
      status: () => session.status(),
      facts: () => ({
        version,
        relay: relay.location,
        lease_backend: leases.kind,
        uptime_ms: Date.now() - sources.startedAt,
      }),
      leases: (limit) => leases.recent(limit),
      conversations: () =>
        session.state.conversationIds().map((id) => {
          const turns = session.state.conversation(id);
          return { conversation_id: id, turns: turns.length, last_ms: turns.at(-1)?.hlc.wall_ms ?? 0 };
        }),
      errors: () => sources.recent.list(),
      rates: () => sources.rates.snapshot(),
      now: Date.now,
    }),
  ];
  return new Map(routes);
}
