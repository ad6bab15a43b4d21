import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/** The samples of a Prometheus text exposition, by `name{labels}` as written. */
function samples(text: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    found.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return found;
}

/** Debian's `promtool check metrics`, the Prometheus project's own parser and linter, on `text`. */
function promtool(text: string): { status: number | null; output: string } {
  const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (result.error) throw new Error(`promtool is not installed (.ci/run installs Debian's prometheus package): ${result.error.message}`);
  return { status: result.status, output: result.stdout + result.stderr };
}

async function scrape(daemon: DaemonProcess): Promise<string> {
  const base = (await daemon.info())!.url.replace(/^ws:/, 'http:');
  const response = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${await daemon.token()}` } });
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return response.text();
}

describe('metrics', () => {
  it('serves /metrics behind the token in a format promtool accepts, with counters that move as ops are appended, pushed and folded', async () => {
    const relay = await tempDir();
    const a = await DaemonProcess.start(await tempDir(), relay);
    const b = await DaemonProcess.start(await tempDir(), relay);
    try {
      const base = (await a.info())!.url.replace(/^ws:/, 'http:');
      expect((await fetch(`${base}/metrics`)).status).toBe(401);
      const before = samples(await scrape(a));
      expect(before.get('opsync_appends_total')).toBe(0);

      const [clientA, clientB] = [await a.connect(), await b.connect()];
      for (let i = 0; i < 5; i++) await clientA.call('sync.append', { surface: 'knowledge', payload: { id: `k${i}` } });
      await clientA.call('lease.acquire', { agent_id: 'agent-m', ttl_ms: 60_000 });
      await clientA.call('sync.pump');
      await clientB.call('sync.pump');
      const deviceB = (await b.info())!.device_id;
      // An explicit pump reads the relay's roster afresh: A's status now lists B.
      await clientA.call('sync.pump');
      const { roster } = await clientA.call<{ roster: Array<{ device_id: string }> }>('sync.status');
      expect(roster.map((entry) => entry.device_id)).toContain(deviceB);
      await expect(clientA.call('sync.nope')).rejects.toThrow(/not found/);

      const textA = await scrape(a);
      const textB = await scrape(b);
      await clientA.close();
      await clientB.close();
      for (const text of [textA, textB]) {
        const checked = promtool(text);
        expect(checked.output).toBe('');
        expect(checked.status).toBe(0);
      }
      const afterA = samples(textA);
      const afterB = samples(textB);
      const deviceA = (await a.info())!.device_id;
      expect(afterA.get('opsync_appends_total')).toBe(5);
      expect(afterA.get('opsync_pushed_ops_total')).toBe(5);
      expect(afterA.get('opsync_append_duration_seconds_count')).toBe(5);
      expect(afterA.get('opsync_rpc_requests_total{method="sync.append",outcome="ok"}')).toBe(5);
      expect(afterA.get('opsync_rpc_requests_total{method="(unknown)",outcome="method_not_found"}')).toBe(1);
      expect(afterA.get('opsync_rpc_refused_connections_total{reason="token"}')).toBe(1);
      expect(afterA.get('opsync_leases_held')).toBe(1);
      expect(afterA.get('opsync_unpushed_ops')).toBe(0);
      expect(afterA.get('opsync_journal_bytes')).toBeGreaterThan(0);
      expect(afterA.get('opsync_relay_bytes')).toBeGreaterThan(0);
      // The test's own connection, open while A was scraped.
      expect(afterA.get('opsync_rpc_connections')).toBe(1);
      expect(afterB.get('opsync_pulled_ops_total')).toBe(5);
      expect(afterB.get('opsync_folded_ops_total')).toBe(5);
      expect(afterB.get('opsync_propagation_seconds_count')).toBe(5);
      expect(afterB.has(`opsync_peer_lag_ops{device="${deviceA}"}`)).toBe(true);
      expect(afterA.has(`opsync_peer_lag_seconds{device="${deviceB}"}`)).toBe(true);
      expect([...afterA.keys()].some((key) => key.startsWith('opsync_info{') && key.includes(`device="${deviceA}"`))).toBe(true);
      // prom-client's process metrics come along.
      expect(afterA.has('process_resident_memory_bytes')).toBe(true);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('serves /metrics and the probes on --metrics-listen without the token, and not the status page', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir(), ['--metrics-listen', '127.0.0.1:0']);
    try {
      const info = JSON.parse(await readFile(join(daemon.dataDir, 'daemon.json'), 'utf8')) as { metrics_url: string };
      expect(info.metrics_url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const metrics = await fetch(info.metrics_url);
      expect(metrics.status).toBe(200);
      expect(samples(await metrics.text()).get('opsync_appends_total')).toBe(0);
      const origin = new URL(info.metrics_url).origin;
      expect((await fetch(`${origin}/readyz`)).status).toBe(200);
      expect((await fetch(`${origin}/status`)).status).toBe(426);
      expect((await fetch(`${origin}/status/data`)).status).toBe(426);
    } finally {
      await daemon.stop();
    }
  });
});
