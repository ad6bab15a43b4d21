import { createHash } from 'node:crypto';
import { appendFile, open, readFile, realpath, truncate, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FileJournal } from '../../src/journal/file-journal.js';
import type { JournalEntry } from '../../src/journal/journal.js';
import { MAX_LINE_BYTES, readLines } from '../../src/journal/line-reader.js';
import { JournalVerifier } from '../../src/journal/journal-verifier.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import { isOpsyncError } from '../../src/util/opsync-error.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { applyDamage, damages } from '../helpers/damage.js';
import { TestDevice } from '../helpers/test-device.js';
import { runningProcess, unreapedZombie } from '../helpers/processes.js';
import { childScript, spawnLines } from '../helpers/children.js';
import { identityOf } from '../../src/journal/process-identity.js';

const tempDir = useTempDirs();
const laptop = parseDeviceId('laptop');

async function journalWith(count: number): Promise<{ path: string; device: TestDevice }> {
  const path = join(await tempDir(), 'journal.log');
  const device = new TestDevice('laptop', 1);
  const { journal } = await FileJournal.open(path, laptop, () => {});
  for (let i = 0; i < count; i++) {
    const op = device.op('knowledge', { id: `k${i}` });
    await journal.append([{ kind: 'op', op, plain: op.payload }]);
  }
  await journal.close();
  return { path, device };
}

async function reopen(path: string) {
  const entries: JournalEntry[] = [];
  const verifier = new JournalVerifier(path);
  const { journal, recovery } = await FileJournal.open(path, laptop, (entry, line) => {
    verifier.check(entry, line);
    entries.push(entry);
  });
  await journal.close();
  return { entries, recovery, verifier };
}

describe('file journal recovery', () => {
  it('cuts a torn partial line at the tail and keeps every complete one', async () => {
    const { path } = await journalWith(3);
    const size = (await readFile(path)).length;
    await truncate(path, size - 20);
    const { entries, recovery } = await reopen(path);
    expect(entries).toHaveLength(2);
    expect(recovery.cutLines).toBe(1);
    expect((await readFile(path)).length).toBeLessThan(size - 20);
  });

  it('cuts a last line whose checksum fails, then appends cleanly after it', async () => {
    const { path, device } = await journalWith(3);
    const text = await readFile(path, 'utf8');
    const lines = text.split('\n');
    lines[3] = lines[3]!.replace('"k2"', '"kX"');
    await writeFile(path, lines.join('\n'));
    const first = await reopen(path);
    expect(first.entries).toHaveLength(2);
    expect(first.recovery.cutLines).toBe(1);

    device.head = first.verifier.heads.get(laptop) ?? null;
    const { journal } = await FileJournal.open(path, laptop, () => {});
    const op = device.op('knowledge', { id: 'after' });
    await journal.append([{ kind: 'op', op, plain: op.payload }]);
    await journal.close();
    const second = await reopen(path);
    expect(second.entries).toHaveLength(3);
    expect(second.recovery.cutLines).toBe(0);
  });

  it('refuses a corrupt line in the middle, naming the file and the line', async () => {
    const { path } = await journalWith(4);
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines[2] = lines[2]!.replace('"k1"', '"kX"');
    await writeFile(path, lines.join('\n'));
    await expect(reopen(path)).rejects.toMatchObject({
      code: 'journal_corrupt',
      message: expect.stringContaining(`${path} line 3`) as unknown,
    });
  });

  it('refuses a line whose checksum matches but whose op breaks the chain', async () => {
    const { path, device } = await journalWith(2);
    const stray = device.op('knowledge', { id: 'k9' });
    const { journal } = await FileJournal.open(path, laptop, () => {});
    await journal.append([{ kind: 'op', op: { ...stray, seq: 7 }, plain: null }]);
    await journal.close();
    await expect(reopen(path)).rejects.toMatchObject({ code: 'journal_corrupt', message: expect.stringContaining('line 4') as unknown });
  });

  it('refuses an op whose bytes no longer hash to its op id, even under a valid checksum', async () => {
    const { path } = await journalWith(3);
    const lines = (await readFile(path, 'utf8')).split('\n');
    const record = lines[2]!.slice(9).replace('"k1"', '"kX"');
    lines[2] = `${crc32(record).toString(16).padStart(8, '0')} ${record}`;
    await writeFile(path, lines.join('\n'));
    await expect(reopen(path)).rejects.toMatchObject({
      code: 'journal_corrupt',
      message: expect.stringContaining('line 3 is corrupt: device laptop seq 1: op_id is not the hash') as unknown,
    });
  });

  it('refuses a journal written for another device', async () => {
    const { path } = await journalWith(1);
    await expect(FileJournal.open(path, parseDeviceId('phone'), () => {})).rejects.toMatchObject({ code: 'journal_mismatch' });
  });

  it('names the format version it cannot read', async () => {
    const path = join(await tempDir(), 'journal.log');
    const header = JSON.stringify({ opsync_journal: 99, device_id: 'laptop' });
    await writeFile(path, `${crc32(header).toString(16).padStart(8, '0')} ${header}\n`);
    await expect(FileJournal.open(path, laptop, () => {})).rejects.toMatchObject({
      code: 'journal_version',
      message: expect.stringContaining('version 99') as unknown,
    });
  });

  it('opens though another process holds the abstract socket name a lock would have without its secret (another user squatting it)', async () => {
    const { path } = await journalWith(1);
    const predictable = `\0opsync-lock-${createHash('sha256')
      .update(join(await realpath(dirname(path)), 'journal.log.lock'))
      .digest('hex')}`;
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(predictable, resolve));
    try {
      expect((await reopen(path)).entries).toHaveLength(1);
    } finally {
      squatter.close();
    }
  });

  it('takes over a lock left by a process that no longer runs', async () => {
    const { path } = await journalWith(1);
    await writeFile(`${path}.lock`, JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname() }));
    const { entries } = await reopen(path);
    expect(entries).toHaveLength(1);
  });

  it('takes over a lock whose pid now belongs to another process (a reboot, a recycled pid)', async () => {
    const { path } = await journalWith(1);
    const other = await runningProcess();
    try {
      const identity = (await identityOf(other.pid!))!;
      await writeFile(`${path}.lock`, JSON.stringify({ ...identity, host: hostname() }));
      await expect(reopen(path)).rejects.toMatchObject({
        code: 'journal_locked',
        message: expect.stringContaining(`process ${other.pid}`) as unknown,
      });
      await writeFile(
        `${path}.lock`,
        JSON.stringify({ pid: other.pid!, started: `${identity.started!.split('/')[0]}/1`, host: hostname() }),
      );
      expect((await reopen(path)).entries).toHaveLength(1);
      await writeFile(
        `${path}.lock`,
        JSON.stringify({ pid: other.pid!, started: `an-earlier-boot/${identity.started!.split('/')[1]}`, host: hostname() }),
      );
      expect((await reopen(path)).entries).toHaveLength(1);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('takes over a lock whose holder was killed and is a zombie its parent never reaped', async () => {
    const { path } = await journalWith(1);
    const zombie = await unreapedZombie();
    try {
      await writeFile(`${path}.lock`, JSON.stringify({ ...zombie.identity, host: hostname() }));
      expect((await reopen(path)).entries).toHaveLength(1);
    } finally {
      zombie.parent.kill('SIGKILL');
    }
  });

  it('lets exactly one of several processes that find the same stale lock at once open the journal', async () => {
    const { path } = await journalWith(1);
    for (let round = 0; round < 5; round++) {
      await writeFile(`${path}.lock`, JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname() }));
      const children = Array.from({ length: 4 }, () => spawnLines(childScript('journal-hold'), [path, 'laptop']));
      try {
        const outcomes = await Promise.all(
          children.map(async (child) => JSON.parse(await child.waitForLine(() => true)) as { ok: boolean; code?: string }),
        );
        expect(outcomes.filter((outcome) => outcome.ok)).toHaveLength(1);
        expect(outcomes.filter((outcome) => !outcome.ok).map((outcome) => outcome.code)).toEqual([
          'journal_locked',
          'journal_locked',
          'journal_locked',
        ]);
      } finally {
        for (const child of children) child.process.stdin!.end();
        await Promise.all(children.map((child) => child.exited));
      }
    }
  });

  it('writes concurrent appends in shared fdatasync batches', async () => {
    const path = join(await tempDir(), 'journal.log');
    const device = new TestDevice('laptop', 1);
    const { journal } = await FileJournal.open(path, laptop, () => {});
    const ops = Array.from({ length: 100 }, (_, i) => device.op('knowledge', { id: `k${i}` }));
    await Promise.all(ops.map((op) => journal.append([{ kind: 'op', op, plain: null }])));
    expect(journal.stats.entries).toBe(100);
    expect(journal.stats.batches).toBeLessThan(100);
    await journal.close();
  });
});

describe('a line longer than any journal line (damage, such as a run of garbage)', () => {
  const GARBAGE = Buffer.alloc(MAX_LINE_BYTES + 5 * 1024 * 1024, 0x41);

  it('is passed over by the line reader without being held, and reported as an empty line', async () => {
    const path = join(await tempDir(), 'lines');
    await writeFile(path, Buffer.concat([Buffer.from('first\n'), GARBAGE, Buffer.from('\nlast\npartial')]));
    const seen: Array<{ text: string; line: number; next: number }> = [];
    const handle = await open(path, 'r');
    const { lines, tailBytes } = await readLines(handle, (await handle.stat()).size, (buf, start, end, line, next) => {
      seen.push({ text: buf.toString('utf8', start, end), line, next });
    });
    await handle.close();
    const garbageEnd = 6 + GARBAGE.length + 1;
    expect(seen).toEqual([
      { text: 'first', line: 1, next: 6 },
      { text: '', line: 2, next: garbageEnd },
      { text: 'last', line: 3, next: garbageEnd + 5 },
    ]);
    expect({ lines, tailBytes }).toEqual({ lines: 3, tailBytes: 'partial'.length });
  });

  it('is cut at the tail of a journal, keeping every entry before it', async () => {
    const { path } = await journalWith(3);
    await appendFile(path, GARBAGE);
    const { entries, recovery } = await reopen(path);
    expect(entries).toHaveLength(3);
    expect(recovery).toEqual({ cutLines: 1, cutBytes: GARBAGE.length });
  });

  it('is corruption, naming the line, when entries follow it', async () => {
    const { path } = await journalWith(3);
    const lines = (await readFile(path, 'utf8')).split('\n');
    await writeFile(path, [...lines.slice(0, 3), GARBAGE.toString('latin1'), ...lines.slice(3)].join('\n'));
    await expect(reopen(path)).rejects.toMatchObject({
      code: 'journal_corrupt',
      message: expect.stringContaining(`${path} line 4`) as unknown,
    });
  });
});

describe('a journal damaged at random', () => {
  it('opens to a prefix of what was written, or is refused by name: never another entry, never a crash', async () => {
    const { path } = await journalWith(12);
    const original = await readFile(path);
    const { entries: written } = await reopen(path);
    await fc.assert(
      fc.asyncProperty(damages(original.length - 1), async (changes) => {
        await writeFile(path, changes.reduce(applyDamage, original));
        try {
          const { entries } = await reopen(path);
          expect(entries).toEqual(written.slice(0, entries.length));
        } catch (error) {
          if (!isOpsyncError(error)) throw error;
          expect(['journal_corrupt', 'journal_version', 'journal_mismatch']).toContain(error.code);
        }
      }),
      { numRuns: 150, seed: 20261125 },
    );
  });
});
