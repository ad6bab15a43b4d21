import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { startPostgres } from '../helpers/postgres.js';
import { percentile, progress, progressDone, settle, type Row } from './bench-table.js';

/** Lease operations through one daemon, for the directory and the Postgres backends. */
export async function leaseBench(): Promise<Row[]> {
  const rows = await backendRows('dir', []);
  settle();
  const postgres = await startPostgres({ fsync: true });
  try {
    rows.push(...(await backendRows('postgres', ['--lease-backend', 'postgres', '--pg-url', postgres.url])));
  } finally {
    await postgres.stop();
  }
  return rows;
}

async function backendRows(backend: string, extra: string[]): Promise<Row[]> {
  const root = await mkdtemp(join(tmpdir(), 'opsync-bench-lease-'));
  const daemon = await DaemonProcess.start(join(root, 'a'), join(root, 'relay'), extra);
  try {
    const client = await daemon.connect();
    progress(`lease: acquire + release pairs (${backend})`);
    const pairs = await timed(
      2_000,
      async (i) => {
        const { epoch } = await client.call<{ epoch: number }>('lease.acquire', { agent_id: `bench-${i % 8}`, ttl_ms: 60_000 });
        await client.call('lease.release', { agent_id: `bench-${i % 8}`, epoch });
      },
      8,
    );
    const { epoch } = await client.call<{ epoch: number }>('lease.acquire', { agent_id: 'bench-fence', ttl_ms: 600_000 });
    progress(`lease: fence checks (${backend})`);
    const fences = await timed(
      5_000,
      async (i) => {
        await client.call('sync.fence_check', { agent_id: 'bench-fence', run_id: `run-${i}`, epoch });
      },
      8,
    );
    await client.close();
    progressDone();
    const note = `one daemon, 8 concurrent callers, ${backend} backend`;
    return [
      { name: `lease.${backend}.acquire_release`, value: Math.round(pairs.rate), unit: 'pairs/s', target: 'report', note },
      { name: `lease.${backend}.acquire_release_p50`, value: pairs.p50, unit: 'ms', target: 'report' },
      { name: `lease.${backend}.acquire_release_p99`, value: pairs.p99, unit: 'ms', target: 'report' },
      { name: `lease.${backend}.fence_check`, value: Math.round(fences.rate), unit: 'checks/s', target: 'report', note },
      { name: `lease.${backend}.fence_check_p50`, value: fences.p50, unit: 'ms', target: 'report' },
      { name: `lease.${backend}.fence_check_p99`, value: fences.p99, unit: 'ms', target: 'report' },
    ];
  } finally {
    await daemon.stop();
    await rm(root, { recursive: true, force: true });
  }
}

/** Runs `count` operations from `concurrency` callers; rate and latency percentiles. */
async function timed(
  count: number,
  operation: (i: number) => Promise<void>,
  concurrency: number,
): Promise<{ rate: number; p50: number; p99: number }> {
  const latencies: number[] = [];
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      for (let i = next++; i < count; i = next++) {
        const t0 = performance.now();
        await operation(i * concurrency + worker);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return { rate: count / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
}
