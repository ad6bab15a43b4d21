import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Session } from '../../src/session/session.js';
import { openDirSession } from '../helpers/dir-world.js';
import { appendMany } from './append-many.js';
import { settle, percentile, progress, progressDone, type Row } from './bench-table.js';

export async function relayBench(): Promise<Row[]> {
  const rows: Row[] = [];
  rows.push(await convergeBench());
  settle();
  rows.push(...(await bootstrapBench()));
  settle();
  rows.push(await compactBench());
  return rows;
}

/**
 * Two devices hold 2 × 50 000 ops; A publishes a checkpoint of them and B compacts onto it — which
 * includes verifying it (before format 2: decrypting and folding A's checkpoint; since: comparing
 * its heads and state hash with B's own state, and copying it chunk by chunk,
 * proposals/checkpoint.md §Compaction).
 */
function compactBench(): Promise<Row> {
  const OPS = 50_000;
  return withTwoDevices(async (a, b) => {
    progress('relay: two devices with 50,000 ops each, then a checkpoint');
    await Promise.all([appendMany(a, OPS, 0), appendMany(b, OPS, OPS)]);
    // Push, pull, then ack what was pulled: the stable frontier covers everything.
    for (let round = 0; round < 2; round++) for (const device of [a, b]) await device.pump();
    const published = await a.checkpoint();
    if (!published.published) throw new Error(`no checkpoint: ${published.reason}`);
    progress('relay: compacting the other device onto that checkpoint');
    const start = performance.now();
    const report = await b.compact();
    const seconds = (performance.now() - start) / 1000;
    if (!report.compacted) throw new Error(`no compaction: ${report.reason}`);
    return {
      name: 'relay.compact_onto_peer_100k',
      value: seconds,
      unit: 's',
      target: 'report',
      note: "verify another device's checkpoint of 100,000 ops, rewrite the journal onto it, collect the relay",
    };
  });
}

/** Two in-process devices each append 50 000 ops concurrently; time until both hold the same state. */
function convergeBench(): Promise<Row> {
  const OPS = 50_000;
  return withTwoDevices(async (a, b) => {
    await Promise.all([a.startLive(), b.startLive()]);
    progress('relay: two devices appending 50,000 ops each');
    const start = performance.now();
    const converged = untilEqual(a, b, 2 * OPS);
    await Promise.all([appendMany(a, OPS, 0), appendMany(b, OPS, OPS)]);
    await converged;
    const seconds = (performance.now() - start) / 1000;
    return {
      name: 'relay.converge_2x50k',
      value: seconds,
      unit: 's',
      target: '<= 10',
      note: `directory relay, file journals, live sync; ${Math.round((2 * OPS) / seconds).toLocaleString('en-US')} ops/s end to end`,
    };
  });
}

/** Runs `work` on two in-process devices on a fresh relay folder (file journals), then closes both and removes every folder. */
async function withTwoDevices(work: (a: Session, b: Session) => Promise<Row>): Promise<Row> {
  const dirs = await Promise.all([0, 1, 2].map(() => mkdtemp(join(tmpdir(), 'opsync-bench-relay-'))));
  const [relay, dirA, dirB] = dirs as [string, string, string];
  try {
    const a = await openDirSession(relay, dirA, 'bench-a');
    const b = await openDirSession(relay, dirB, 'bench-b');
    const row = await work(a, b);
    await Promise.all([a.close(), b.close()]);
    progressDone();
    return row;
  } finally {
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  }
}

function untilEqual(a: Session, b: Session, records: number): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (a.state.stateHash() === b.state.stateHash() && a.stats.counters.folded + a.stats.counters.appends >= records) {
        stopA();
        stopB();
        resolve();
      }
    };
    const stopA = a.onChange(check);
    const stopB = b.onChange(check);
  });
}

/**
 * A checkpoint covering 1 000 000 ops plus a 10 000-op tail of real signed ops: a new device
 * bootstraps from it in a separate process (so its peak RSS is its own); then pumps bringing
 * 1 000 new ops each into the device that now holds over a million.
 */
async function bootstrapBench(): Promise<Row[]> {
  const MILLION = 1_000_000;
  const dirs = await Promise.all([0, 1, 2].map(() => mkdtemp(join(tmpdir(), 'opsync-bench-boot-'))));
  const [relayDir, writerDir, newcomerDir] = dirs as [string, string, string];
  try {
    progress('relay: building a 1,000,000-op checkpoint and a 10,000-op tail');
    execFileSync(
      process.execPath,
      [
        '--max-old-space-size=8192',
        join(process.cwd(), 'dist', 'test', 'bench', 'prepare-bootstrap-child.js'),
        relayDir,
        writerDir,
        String(MILLION),
      ],
      {
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    const writer = await openDirSession(relayDir, writerDir, 'bench-writer');
    progress('relay: bootstrapping a new device');
    const child = spawn(
      process.execPath,
      ['--max-old-space-size=8192', join(process.cwd(), 'dist', 'test', 'bench', 'bootstrap-child.js'), relayDir, newcomerDir],
      {
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    );
    const events = createInterface({ input: child.stdout });
    const nextEvent = () =>
      new Promise<Record<string, number | string>>((resolve) =>
        events.once('line', (line) => resolve(JSON.parse(line) as Record<string, number | string>)),
      );
    const boot = await nextEvent();
    if (Number(boot.folded) !== 10_000 || !boot.base)
      throw new Error(`bootstrap did not use the checkpoint and tail: ${JSON.stringify(boot)}`);
    await nextEvent();

    const pumpMs: number[] = [];
    for (let round = 0; round < 10; round++) {
      progress(`relay: pump of 1,000 new ops into the device holding a million (${round + 1}/10)`);
      await appendMany(writer, 1000, MILLION + 10_000 + round * 1000);
      await writer.pump();
      child.stdin.write('pump\n');
      const pumped = await nextEvent();
      if (Number(pumped.folded) !== 1000) throw new Error(`pump folded ${pumped.folded}, expected 1000`);
      pumpMs.push(Number(pumped.ms));
    }
    child.stdin.write('close\n');
    await new Promise((resolve) => child.on('exit', resolve));
    await writer.close();
    progressDone();
    pumpMs.sort((x, y) => x - y);
    return [
      {
        name: 'relay.bootstrap_1m_plus_10k',
        value: Number(boot.ms) / 1000,
        unit: 's',
        target: '<= 5',
        note: 'load + verify the checkpoint (decrypt, digests, state hash), pull and fold the tail',
      },
      {
        name: 'relay.bootstrap_peak_rss',
        value: Math.round(Number(boot.maxRssMiB)),
        unit: 'MiB',
        target: 'report',
        note: 'separate process',
      },
      {
        name: 'relay.pump_1k_into_1m_p50',
        value: percentile(pumpMs, 50),
        unit: 'ms',
        target: '<= 100',
        note: '10 pumps, each bringing 1,000 new ops, after the bootstrap settled',
      },
      { name: 'relay.pump_1k_into_1m_max', value: pumpMs.at(-1)!, unit: 'ms', target: '<= 100' },
    ];
  } finally {
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  }
}
