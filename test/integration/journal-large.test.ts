import { execFileSync } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { FileJournal } from '../../src/journal/file-journal.js';
import type { JournalEntry } from '../../src/journal/journal.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import { chainEntries } from '../bench/workload.js';
import { childScript } from '../helpers/children.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/** Large journals verify op ids on a worker thread; these run the compiled code to exercise that path. */
describe('large journal reopen', () => {
  async function largeJournal(): Promise<string> {
    const path = join(await tempDir(), 'journal.log');
    const device = parseDeviceId('big');
    const { journal } = await FileJournal.open(path, device, () => {});
    let batch: JournalEntry[] = [];
    for (const { op, plain } of chainEntries(device, 40_000)) {
      batch.push({ kind: 'op', op, plain });
      if (batch.length === 5000) {
        await journal.append(batch);
        batch = [];
      }
    }
    await journal.close();
    expect((await stat(path)).size).toBeGreaterThan(32 * 1024 * 1024);
    return path;
  }

  const open = (path: string) =>
    JSON.parse(execFileSync(process.execPath, [childScript('journal-open'), path, 'big'], { encoding: 'utf8' })) as Record<string, unknown>;

  it('opens and verifies every op', async () => {
    expect(open(await largeJournal())).toEqual({ ok: true, ops: 40_000 });
  });

  it('names the line of an op whose bytes no longer hash to its op id, even with a valid checksum', async () => {
    const path = await largeJournal();
    const lines = (await readFile(path, 'utf8')).split('\n');
    const record = lines[30_000]!.slice(9).replace('"kid":"k-0123456789abcdef"', '"kid":"k-0123456789abcdee"');
    lines[30_000] = `${crc32(record).toString(16).padStart(8, '0')} ${record}`;
    await writeFile(path, lines.join('\n'));
    expect(open(path)).toMatchObject({ ok: false, code: 'journal_corrupt', message: expect.stringContaining('line 30001') as unknown });
  });
});
