import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { RpcClient } from '../../src/rpc/rpc-client.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { percentile, progress, progressDone, settle, type Row } from './bench-table.js';
import { rawMintRate, rawSignRate } from './ceilings.js';
import { cpuPerOp, cpuSample, ownCpuMicros, type CpuPerOp } from './cpu-time.js';
import { chainEntries, payloadFor, writeJournal } from './workload.js';

export async function daemonBench(): Promise<Row[]> {
  const echo = await echoCeiling();
  const mint = rawMintRate();
  const rows: Row[] = [...echo.rows, rawSignRate(), mint];
  settle();
  rows.push(...(await appendThroughput(echo.rate, mint.value)));
  settle();
  rows.push(...(await propagation()));
  settle();
  rows.push(await holdingAMillion());
  return rows;
}

/** Calls `method` `count` times over one connection with up to `window` requests in flight. */
async function pipelined(client: RpcClient, count: number, window: number, params: (i: number) => object, method: string): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: window }, async () => {
      while (next < count) await client.call(method, params(next++));
    }),
  );
  return count / ((performance.now() - start) / 1000);
}

/** CPU per call of a measured run: the server process's (by thread) and this client's, in µs. */
interface CallCpu {
  readonly server: CpuPerOp;
  readonly client: number;
}

/** Runs `calls` calls with `run`, measuring the CPU the server process `pid` and this client spend per call (null where /proc cannot tell). */
async function withCpu(pid: number, calls: number, run: () => Promise<number>): Promise<{ rate: number; cpu: CallCpu | null }> {
  const before = cpuSample(pid);
  const clientBefore = ownCpuMicros();
  const rate = await run();
  const clientAfter = ownCpuMicros();
  const after = cpuSample(pid);
  const cpu = before && after ? { server: cpuPerOp(before, after, calls), client: (clientAfter - clientBefore) / calls } : null;
  return { rate, cpu };
}

async function echoCeiling(): Promise<{ rows: Row[]; rate: number }> {
  progress('daemon: raw JSON-RPC echo over ws');
  const child = spawn(process.execPath, [join(process.cwd(), 'dist', 'test', 'bench', 'echo-server-child.js')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const url = await new Promise<string>((resolve) => createInterface({ input: child.stdout }).once('line', resolve));
    const client = await RpcClient.connect(url, '');
    const [surface, payload] = payloadFor(0);
    await pipelined(client, 5_000, 256, () => ({ surface, payload }), 'echo');
    const { rate, cpu } = await withCpu(child.pid!, 50_000, () => pipelined(client, 50_000, 256, () => ({ surface, payload }), 'echo'));
    await client.close();
    const rows: Row[] = [
      {
        name: 'ceiling.jsonrpc_echo_ws',
        value: Math.round(rate),
        unit: 'calls/s',
        target: 'reference',
        note: 'bare ws + json-rpc-2.0 in a separate process, one connection, 256 in flight, same params as the appends',
      },
    ];
    if (cpu) {
      const value = cpu.server.total + cpu.client;
      rows.push({
        name: 'ceiling.jsonrpc_echo_cpu',
        value,
        unit: 'µs/call',
        target: 'reference',
        note: `CPU per echo, both processes: server ${cpu.server.total.toFixed(1)}, client ${cpu.client.toFixed(1)}`,
      });
    }
    return { rows, rate };
  } finally {
    child.kill();
  }
}

async function appendThroughput(echoRate: number, mintRate: number): Promise<Row[]> {
  const root = await mkdtemp(join(tmpdir(), 'opsync-bench-daemon-'));
  const daemon = await DaemonProcess.start(join(root, 'a'), join(root, 'relay'));
  try {
    progress('daemon: pipelined sync.append over one connection');
    const client = await daemon.connect();
    const append = (i: number) => {
      const [surface, payload] = payloadFor(i);
      return { surface, payload };
    };
    await pipelined(client, 5_000, 256, append, 'sync.append');
    const { rate, cpu } = await withCpu(daemon.process.pid!, 50_000, () =>
      pipelined(client, 50_000, 256, (i) => append(5_000 + i), 'sync.append'),
    );
    const scrape = await metricsScrape(daemon, client);
    await client.close();
    progressDone();
    const rows: Row[] = [
      {
        name: 'daemon.append_pipelined',
        value: Math.round(rate),
        unit: 'ops/s',
        target: `>= ${Math.max(20_000, Math.round(echoRate / 2))}`,
        note: `durable, one connection, 256 in flight; ${((100 * rate) / echoRate).toFixed(0)}% of the echo ceiling (target: >= 20 000 and >= 50%)`,
      },
    ];
    if (cpu) rows.push(appendCpuRow(cpu, echoRate, mintRate));
    rows.push(scrape);
    return rows;
  } finally {
    await daemon.stop();
    await rm(root, { recursive: true, force: true });
  }
}

/**
 * What one Prometheus scrape of `/metrics` costs a daemon holding 55 000 appends, beside a
 * `sync.status` round trip (what the scrape's gauges read) in the same run.
 */
async function metricsScrape(daemon: DaemonProcess, client: RpcClient): Promise<Row> {
  progress('daemon: GET /metrics');
  const url = (await daemon.info())!.url.replace(/^ws:/, 'http:') + '/metrics';
  const headers = { authorization: `Bearer ${await daemon.token()}` };
  const timed = async (run: () => Promise<unknown>) => {
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      const start = performance.now();
      await run();
      times.push(performance.now() - start);
    }
    return percentile(times, 50);
  };
  const scrape = await timed(async () => (await fetch(url, { headers })).text());
  const status = await timed(() => client.call('sync.status'));
  return {
    name: 'daemon.metrics_scrape_p50',
    value: Math.round(scrape * 100) / 100,
    unit: 'ms',
    target: 'report',
    note: `one GET /metrics over HTTP, 200 in a row; ${(scrape / status).toFixed(1)}× a sync.status round trip (${status.toFixed(2)} ms)`,
  };
}

/**
 * Where an append's CPU goes. On a machine whose cores the run keeps busy, a pipelined rate is
 * bounded by the CPU every process spends per call: at half the echo's rate, the cores allow an
 * append (daemon and client together) `cores / (echo rate / 2)` seconds of CPU, which the note
 * sets beside what minting one op alone (seal, hash, sign) costs here.
 */
function appendCpuRow(cpu: CallCpu, echoRate: number, mintRate: number): Row {
  const { server, client } = cpu;
  const cores = availableParallelism();
  const note = [
    `CPU per append, both processes: daemon ${server.total.toFixed(0)} (main thread ${server.main.toFixed(0)}, minting worker ${server.busiestOther.toFixed(0)}, other threads ${(server.total - server.main - server.busiestOther).toFixed(0)})`,
    `client ${client.toFixed(0)}`,
    `minting one op alone ${(1_000_000 / mintRate).toFixed(0)}`,
    `at half the echo's rate ${cores} cores allow ${((cores * 1_000_000) / (echoRate / 2)).toFixed(0)} in all`,
  ].join('; ');
  return { name: 'daemon.append_cpu', value: server.total + client, unit: 'µs/op', target: 'report', note };
}

/** Append on daemon A, time until a subscriber of daemon B hears sync.changed; 2 000 samples. */
async function propagation(): Promise<Row[]> {
  const SAMPLES = 2_000;
  const root = await mkdtemp(join(tmpdir(), 'opsync-bench-prop-'));
  const a = await DaemonProcess.start(join(root, 'a'), join(root, 'relay'));
  const b = await DaemonProcess.start(join(root, 'b'), join(root, 'relay'));
  try {
    const [writer, reader] = await Promise.all([a.connect(), b.connect()]);
    await reader.call('sync.subscribe');
    let heard: () => void = () => {};
    reader.onNotification((method) => method === 'sync.changed' && heard());
    const latencies: number[] = [];
    for (let i = 0; i < SAMPLES + 100; i++) {
      if (i % 100 === 0) progress(`daemon: propagation sample ${i}/${SAMPLES + 100}`);
      const arrived = new Promise<void>((resolve) => (heard = resolve));
      const start = performance.now();
      const [surface, payload] = payloadFor(i);
      await writer.call('sync.append', { surface, payload });
      await arrived;
      if (i >= 100) latencies.push(performance.now() - start);
    }
    await Promise.all([writer.close(), reader.close()]);
    progressDone();
    latencies.sort((x, y) => x - y);
    const note = `A append → B sync.changed, separate processes, directory relay; ${SAMPLES} samples after 100 warm-up`;
    return [
      { name: 'daemon.propagation_p50', value: percentile(latencies, 50), unit: 'ms', target: '<= 25', note },
      { name: 'daemon.propagation_p99', value: percentile(latencies, 99), unit: 'ms', target: '<= 100' },
    ];
  } finally {
    await Promise.all([a.stop(), b.stop()]);
    await rm(root, { recursive: true, force: true });
  }
}

/** A daemon whose journal holds 1 000 000 ops: its peak resident memory after start and a pump. */
async function holdingAMillion(): Promise<Row> {
  const MILLION = 1_000_000;
  const root = await mkdtemp(join(tmpdir(), 'opsync-bench-million-'));
  const dataDir = join(root, 'holder');
  try {
    await writeJournal(dataDir, 'bench-holder', chainEntries('bench-peer', MILLION), (written) =>
      progress(`daemon: writing a journal of 1,000,000 ops (${written.toLocaleString('en-US')})`),
    );
    progress('daemon: starting a daemon that holds 1,000,000 ops');
    const daemon = await DaemonProcess.start(dataDir, join(root, 'relay'), ['--device-id', 'bench-holder']);
    try {
      const client = await daemon.connect();
      const { records } = await client.call<{ records: number }>('sync.hash_state');
      await client.call('sync.pump');
      await client.close();
      const status = await readFile(`/proc/${daemon.process.pid}/status`, 'utf8');
      const peakKiB = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
      progressDone();
      return {
        name: 'daemon.rss_holding_1m_ops',
        value: Math.round(peakKiB / 1024),
        unit: 'MiB',
        target: 'report',
        note: `peak RSS (VmHWM) after start and a pump; ${records.toLocaleString('en-US')} records folded`,
      };
    } finally {
      await daemon.stop();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
