import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FoldState } from '../../src/fold/fold-state.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import type { JournalEntry } from '../../src/journal/journal.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import { coreCrypto } from '../helpers/test-device.js';
import { settle, percentile, progress, progressDone, type Row } from './bench-table.js';
import { rawFdatasyncRate } from './ceilings.js';
import { chainEntries, foldOps } from './workload.js';

const MILLION = 1_000_000;

export async function coreBench(): Promise<Row[]> {
  const dir = await mkdtemp(join(tmpdir(), 'opsync-bench-core-'));
  try {
    const rows: Row[] = [];
    rows.push(...foldBench());
    settle();
    const ceiling = rawFdatasyncRate(dir);
    rows.push(ceiling, ...(await journalAppendBench(dir, ceiling.value)));
    settle();
    rows.push(...(await journalReopenBench(dir)));
    return rows;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function foldBench(): Row[] {
  progress('core: generating 1,000,000 ops');
  const ops = foldOps(MILLION);
  progress('core: folding 1,000,000 ops');
  const state = new FoldState(coreCrypto);
  const start = performance.now();
  for (const op of ops) state.apply(op);
  const foldMs = performance.now() - start;

  progress('core: incremental folds onto the 1,000,000-op state');
  const applyMs: number[] = [];
  const hashMs: number[] = [];
  for (let rep = 0; rep < 30; rep++) {
    const batch = foldOps(1000, MILLION + rep * 1000);
    const t0 = performance.now();
    for (const op of batch) state.apply(op);
    const t1 = performance.now();
    state.stateHash();
    const t2 = performance.now();
    applyMs.push(t1 - t0);
    hashMs.push(t2 - t1);
  }
  applyMs.sort((a, b) => a - b);
  hashMs.sort((a, b) => a - b);
  progressDone();
  return [
    {
      name: 'core.fold_1m_ops',
      value: Math.round(MILLION / (foldMs / 1000)),
      unit: 'ops/s',
      target: '>= 300000',
      note: `mixed surfaces, ~200 B payloads, ${state.recordCount.toLocaleString('en-US')} records`,
    },
    { name: 'core.fold_1k_onto_1m_p50', value: percentile(applyMs, 50), unit: 'ms', target: '<= 20', note: '30 batches of 1,000 new ops' },
    { name: 'core.fold_1k_onto_1m_max', value: applyMs.at(-1)!, unit: 'ms', target: '<= 20' },
    { name: 'core.state_hash_read_max', value: hashMs.at(-1)!, unit: 'ms', target: '<= 1', note: 'first read after each batch (uncached)' },
  ];
}

async function journalAppendBench(dir: string, fdatasyncRate: number): Promise<Row[]> {
  const COUNT = 200_000;
  const APPENDERS = 64;
  progress('core: preparing 200,000 journal entries');
  const entries: JournalEntry[] = [];
  for (const { op, plain } of chainEntries('bench-append', COUNT)) entries.push({ kind: 'op', op, plain });
  const { journal } = await FileJournal.open(join(dir, 'append.log'), parseDeviceId('bench-append'), () => {});
  progress('core: 64 concurrent appenders');
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: APPENDERS }, async () => {
      while (next < COUNT) await journal.append([entries[next++]!]);
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const { batches } = journal.stats;
  await journal.close();
  progressDone();
  const rate = Math.round(COUNT / seconds);
  return [
    {
      name: 'core.journal_append_64',
      value: rate,
      unit: 'ops/s',
      target: '>= 50000',
      note: `durable; ${(COUNT / batches).toFixed(1)} ops per fdatasync; ${(rate / fdatasyncRate).toFixed(1)}x the raw fdatasync rate`,
    },
  ];
}

async function journalReopenBench(dir: string): Promise<Row[]> {
  const path = join(dir, 'reopen.log');
  const device = parseDeviceId('bench-reopen');
  const { journal } = await FileJournal.open(path, device, () => {});
  let batch: JournalEntry[] = [];
  let written = 0;
  for (const { op, plain } of chainEntries(device, MILLION)) {
    batch.push({ kind: 'op', op, plain });
    if (batch.length === 10_000) {
      await journal.append(batch);
      written += batch.length;
      batch = [];
      progress(`core: writing a 1,000,000-op journal (${written.toLocaleString('en-US')})`);
    }
  }
  await journal.append(batch);
  await journal.close();
  progress('core: reopening the 1,000,000-op journal');
  const child = join(process.cwd(), 'dist', 'test', 'bench', 'reopen-child.js');
  const out = JSON.parse(execFileSync(process.execPath, [child, path, device], { encoding: 'utf8' })) as {
    ms: number;
    ops: number;
    maxRssMiB: number;
  };
  const { size } = await import('node:fs/promises').then((fs) => fs.stat(path));
  progressDone();
  if (out.ops !== MILLION) throw new Error(`reopen saw ${out.ops} ops, expected ${MILLION}`);
  return [
    {
      name: 'core.journal_reopen_1m',
      value: out.ms / 1000,
      unit: 's',
      target: '<= 5',
      note: `load + checksum + chain verification (op ids re-hashed), ${(size / 2 ** 20).toFixed(0)} MiB file`,
    },
    {
      name: 'core.journal_reopen_peak_rss',
      value: Math.round(out.maxRssMiB),
      unit: 'MiB',
      target: 'report',
      note: 'separate process, whole run',
    },
  ];
}
