import { DEFAULT_SESSION_OPTIONS } from '../session/session.js';

/** `opsync status`: sync.status as a short human-readable summary. */
export function renderStatus(status: unknown, nowMs: number): string {
  const s = status as {
    device_id: string;
    url?: string;
    state_hash: string;
    journal_frontier: Record<string, number>;
    stable_frontier: Record<string, number>;
    base_checkpoint: string | null;
    roster: Array<{ device_id: string; status: string; last_seen_ms: number; lag: number }>;
    counts: {
      records: number;
      unpushed: number;
      quarantined: number;
      undecryptable: number;
      skipped_payloads: number;
      rejected: Record<string, number>;
      ignored_relay_files: Record<string, number>;
    };
    last_error: string | null;
    clock_ahead_ms?: number;
    version?: string;
    uptime_ms?: number;
    relay?: string;
    lease_backend?: string;
  };
  const frontier = (f: Record<string, number>) =>
    Object.entries(f)
      .map(([d, seq]) => `${d}:${seq}`)
      .join('  ') || '-';
  const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
  const lines = [
    `device       ${s.device_id}${s.url ? `  (${s.url})` : ''}`,
    `daemon       opsync ${s.version ?? '?'}, up ${duration(s.uptime_ms ?? 0)}; relay ${s.relay ?? '?'}; leases ${s.lease_backend ?? '?'}`,
    `state        ${s.state_hash}  (${s.counts.records.toLocaleString('en-US')} record${s.counts.records === 1 ? '' : 's'})`,
    `journal      ${frontier(s.journal_frontier)}`,
    `stable       ${frontier(s.stable_frontier)}`,
    `base         ${s.base_checkpoint ?? 'none (full history in the journal)'}`,
    'peers',
    ...s.roster
      .filter((peer) => peer.device_id !== s.device_id)
      .map(
        (peer) =>
          `  ${peer.device_id.padEnd(38)} ${peer.status.padEnd(8)} lag ${String(peer.lag).padStart(6)} ops   last seen ${ago(nowMs - peer.last_seen_ms)}`,
      ),
    `unpushed     ${s.counts.unpushed}`,
    `quarantined  ${s.counts.quarantined}    undecryptable ${s.counts.undecryptable}    skipped payloads ${s.counts.skipped_payloads}`,
    `rejected     ${sum(s.counts.rejected)} ${JSON.stringify(s.counts.rejected)}    ignored relay files ${sum(s.counts.ignored_relay_files)} ${JSON.stringify(s.counts.ignored_relay_files)}`,
  ];
  if (s.roster.length <= 1) lines.splice(lines.indexOf('peers') + 1, 0, '  (none yet)');
  if (s.last_error) lines.push(`last error   ${s.last_error}`);
  const ahead = s.clock_ahead_ms ?? 0;
  if (ahead > DEFAULT_SESSION_OPTIONS.maxSkewMs) {
    lines.push(
      `clock        this device stamps ops ${duration(ahead)} ahead of its clock (it was set ahead once): peers hold its new ops in quarantine until their clocks get there`,
    );
  }
  return lines.join('\n');
}

function ago(ms: number): string {
  return `${duration(ms)} ago`;
}

function duration(ms: number): string {
  if (ms < 60_000) return `${Math.max(0, Math.round(ms / 1000))} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 172_800_000) return `${Math.round(ms / 3_600_000)} h`;
  return `${Math.round(ms / 86_400_000)} days`;
}
