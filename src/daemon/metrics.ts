import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EndpointStats } from '../rpc/rpc-endpoint.js';
import type { TransportStats } from '../rpc/rpc-server.js';
import type { SessionStatus } from '../session/session-reports.js';
import type { SessionStats } from '../session/session-stats.js';

/** What the metrics read, each at scrape time. */
export interface MetricSources {
  readonly stats: SessionStats;
  status(): SessionStatus;
  rpc(): { readonly endpoint: EndpointStats; readonly transport: TransportStats | null };
  leasesHeld(nowMs: number): number;
  journalBytes(): Promise<number>;
  relayBytes(): Promise<number>;
  readonly info: { readonly version: string; readonly device: string; readonly relay: 'dir' | 'postgres'; readonly lease_backend: string };
}

export interface Metrics {
  readonly contentType: string;
  /** The Prometheus text exposition of every metric, read now. */
  text(): Promise<string>;
}

/** The relay folder is walked (or its tables sized) at most this often; scrapes in between reuse the last count. */
const RELAY_BYTES_EVERY_MS = 30_000;

/**
 * The daemon's metrics in the Prometheus text format (proposals/daemon.md §Metrics), with
 * prom-client: its registry, histograms and text format are what every Prometheus client does,
 * and its process metrics (CPU, memory, event loop lag, open files) come with it.
 *
 * Counters are the session's and the RPC endpoint's running totals, read at scrape; histograms
 * take every append, pump and propagation sample as it happens; gauges are read at scrape.
 */
export function daemonMetrics(sources: MetricSources, now: () => number = Date.now): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client names these gauges `*_total`, which `promtool check metrics` rejects (only counters end in _total).
  for (const misnamed of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
    registry.removeSingleMetric(misnamed);
  let status: SessionStatus | null = null;
  const current = () => (status ??= sources.status());
  const totals = (name: string, help: string, read: () => number) => labelled(registry, 'counter', name, help, [], () => [[{}, read()]]);

  const { counters } = sources.stats;
  totals('opsync_appends_total', 'Ops this device appended.', () => counters.appends);
  totals('opsync_pumps_total', 'Pumps (push, pull, fold, ack) run.', () => counters.pumps);
  totals('opsync_pump_errors_total', 'Pumps that failed (the relay out of reach, a refused push).', () => counters.pump_errors);
  totals('opsync_pushed_ops_total', 'Own ops the relay took.', () => counters.pushed);
  totals('opsync_pulled_ops_total', "Other devices' ops pulled, verified and journaled.", () => counters.pulled);
  totals('opsync_folded_ops_total', 'Ops folded into the state.', () => counters.folded);
  totals('opsync_checkpoints_published_total', 'Checkpoints this device published.', () => counters.checkpoints_published);
  totals('opsync_compactions_total', 'Journal compactions.', () => counters.compactions);
  totals('opsync_rebases_total', 'Rebases onto a checkpoint.', () => counters.rebases);
  labelled(registry, 'counter', 'opsync_rejected_ops_total', 'Ops refused at intake, by why.', ['kind'], () =>
    Object.entries(current().counts.rejected).map(([kind, n]) => [{ kind }, n]),
  );
  labelled(
    registry,
    'counter',
    'opsync_ignored_relay_files_total',
    'Relay files or rows ignored as malformed or foreign, by kind.',
    ['kind'],
    () => Object.entries(current().counts.ignored_relay_files).map(([kind, n]) => [{ kind }, n]),
  );
  labelled(
    registry,
    'counter',
    'opsync_rpc_requests_total',
    'JSON-RPC requests by method and outcome (ok, or the error name).',
    ['method', 'outcome'],
    () =>
      Object.entries(sources.rpc().endpoint.by_method).flatMap(([method, outcomes]) =>
        Object.entries(outcomes).map(([outcome, n]) => [{ method, outcome }, n] as const),
      ),
  );
  labelled(registry, 'counter', 'opsync_rpc_refused_connections_total', 'Connections refused, by why.', ['reason'], () => {
    const transport = sources.rpc().transport;
    if (!transport) return [];
    const { rejected_auth: token, rejected_origin: origin, rejected_unauthenticated: capacity } = transport;
    return [
      [{ reason: 'token' }, token],
      [{ reason: 'origin_or_host' }, origin],
      [{ reason: 'capacity' }, capacity],
    ];
  });

  histograms(registry, sources.stats);
  gauges(registry, sources, current, now);
  return {
    contentType: registry.contentType,
    async text() {
      status = null;
      return registry.metrics();
    },
  };
}

function histograms(registry: Registry, stats: SessionStats): void {
  const seconds = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, buckets, registers: [registry] });
  const byKind: Record<string, Histogram> = {
    append: seconds(
      'opsync_append_duration_seconds',
      'From sync.append called to its op durable.',
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    ),
    pump: seconds(
      'opsync_pump_duration_seconds',
      'One pump: push, pull, fold and ack.',
      [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    ),
    propagation: seconds(
      'opsync_propagation_seconds',
      "From a remote op's stamp (its device's clock) to its fold here.",
      [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    ),
  };
  stats.onSample((kind, ms) => byKind[kind]?.observe(ms / 1000));
}

function gauges(registry: Registry, sources: MetricSources, current: () => SessionStatus, now: () => number): void {
  const gauge = (name: string, help: string, read: () => number) => labelled(registry, 'gauge', name, help, [], () => [[{}, read()]]);
  gauge('opsync_unpushed_ops', 'Own ops not yet on the relay.', () => current().counts.unpushed);
  gauge('opsync_quarantined_ops', 'Ops held back for a stamp too far ahead or a gap.', () => current().counts.quarantined);
  gauge('opsync_undecryptable_ops', 'Ops journaled that no key held here opens.', () => current().counts.undecryptable);
  gauge('opsync_rpc_connections', 'Open WebSocket connections.', () => sources.rpc().transport?.connections ?? 0);
  gauge('opsync_leases_held', 'Execution leases this device holds now.', () => sources.leasesHeld(now()));
  labelled(registry, 'gauge', 'opsync_peer_lag_ops', 'Ops this device holds that a peer has not acknowledged.', ['device'], () =>
    peers(current()).map((peer) => [{ device: peer.device_id }, peer.lag]),
  );
  labelled(
    registry,
    'gauge',
    'opsync_peer_lag_seconds',
    'While a peer is behind: how long since it last acknowledged (0 when caught up).',
    ['device'],
    () => peers(current()).map((peer) => [{ device: peer.device_id }, peer.lag > 0 ? Math.max(0, now() - peer.last_seen_ms) / 1000 : 0]),
  );
  new Gauge({
    name: 'opsync_journal_bytes',
    help: "The journal file's size.",
    registers: [registry],
    async collect() {
      this.set(await sources.journalBytes());
    },
  });
  const relayBytes = every(RELAY_BYTES_EVERY_MS, now, () => sources.relayBytes());
  new Gauge({
    name: 'opsync_relay_bytes',
    help: 'What the relay holds for every device, counted at most every 30 s.',
    registers: [registry],
    async collect() {
      this.set(await relayBytes());
    },
  });
  const { info } = sources;
  new Gauge({
    name: 'opsync_info',
    help: 'This daemon: its version, device, relay and lease backend.',
    labelNames: Object.keys(info),
    registers: [registry],
  }).set({ ...info }, 1);
}

function peers(status: SessionStatus): SessionStatus['roster'] {
  return status.roster.filter((entry) => entry.device_id !== status.device_id);
}

type Sample = readonly [Readonly<Record<string, string>>, number];

/** A counter or gauge whose samples are read at scrape time. */
function labelled(
  registry: Registry,
  type: 'counter' | 'gauge',
  name: string,
  help: string,
  labelNames: string[],
  read: () => readonly Sample[],
): void {
  const config = { name, help, labelNames, registers: [registry] };
  if (type === 'gauge')
    new Gauge({
      ...config,
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.set(labels, value);
      },
    });
  else
    new Counter({
      ...config,
      collect() {
        this.reset();
        for (const [labels, value] of read()) this.inc(labels, value);
      },
    });
}

/** `read` at most once per `ms`; calls in between get the last value. */
function every(ms: number, now: () => number, read: () => Promise<number>): () => Promise<number> {
  let last: { at: number; value: Promise<number> } | null = null;
  return () => {
    if (!last || now() - last.at >= ms) last = { at: now(), value: read().catch(() => 0) };
    return last.value;
  };
}
