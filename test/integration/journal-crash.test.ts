import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileJournal } from '../../src/journal/file-journal.js';
import { JournalVerifier } from '../../src/journal/journal-verifier.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import { childScript, spawnLines } from '../helpers/children.js';
import { seededRandom, testSeed } from '../helpers/seeded.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();
const KILLS = Number(process.env.OPSYNC_CRASH_KILLS ?? 24);

describe('journal crash safety', () => {
  it(`keeps every reported op and a valid chain across ${KILLS} SIGKILLs at random moments`, async () => {
    const seed = testSeed();
    const random = seededRandom(seed);
    const path = join(await tempDir(), 'journal.log');
    const reported = new Map<number, string>();
    try {
      for (let kill = 0; kill < KILLS; kill++) {
        const child = spawnLines(childScript('journal-appender'), [path, 'crasher']);
        await child.waitForLine((line) => line === 'ready');
        const target = 1 + Math.floor(random() * 400);
        let seen = 0;
        child.onLine((line) => {
          const [seq, opId] = line.split(' ');
          if (opId === undefined) return;
          reported.set(Number(seq), opId);
          if (++seen === target) child.process.kill('SIGKILL');
        });
        const { signal } = await child.exited;
        expect(signal).toBe('SIGKILL');

        const verifier = new JournalVerifier(path);
        const held = new Map<number, string>();
        const { journal } = await FileJournal.open(path, parseDeviceId('crasher'), (entry, line) => {
          verifier.check(entry, line);
          if (entry.kind === 'op') held.set(entry.op.seq, entry.op.op_id);
        });
        await journal.close();
        for (const [seq, opId] of reported) expect(held.get(seq), `op ${seq} was reported durable`).toBe(opId);
      }
    } catch (error) {
      throw new Error(`journal crash test failed with OPSYNC_SEED=${seed}: ${(error as Error).message}`);
    }
    expect(reported.size).toBeGreaterThan(KILLS);
  });
});
