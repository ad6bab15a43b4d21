import { readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Session } from '../../src/session/session.js';
import { openDirSession } from '../helpers/dir-world.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * A device runs for months: it checkpoints and compacts again and again, and now and then it is
 * killed in the middle of a write. Neither may make its data directory or the relay grow
 * without bound.
 */
describe('what a long-lived device leaves behind', () => {
  async function cycle(device: Session, round: number): Promise<string> {
    for (let i = 0; i < 5; i++) await device.append({ surface: 'knowledge', payload: { id: `r${round}-${i}` }, scope: 'personal' });
    await device.pump();
    const { checkpoint_hash } = await device.checkpoint();
    expect(await device.compact()).toMatchObject({ compacted: true, base_checkpoint: checkpoint_hash });
    return checkpoint_hash!;
  }

  it('keeps one local checkpoint copy however often it compacts, and a restart still starts from it', async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const device = await openDirSession(relay, dataDir, 'laptop');
    let base = '';
    for (let round = 0; round < 4; round++) {
      base = await cycle(device, round);
      await device.settled();
      expect(await readdir(join(dataDir, 'checkpoints'))).toEqual([`${base}.jsonl`]);
    }
    const state = device.state.stateHash();
    await device.close();
    const again = await openDirSession(relay, dataDir, 'laptop');
    expect(again.state.stateHash()).toBe(state);
    expect(again.status().base_checkpoint).toBe(base);
    await again.close();
  });

  it('removes the temporary files of writes a crash interrupted, except one another device may be writing now', async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const device = await openDirSession(relay, dataDir, 'laptop');
    const base = await cycle(device, 0);
    await device.close();
    const leftovers = [
      join(dataDir, 'checkpoints', `.tmp-${base}.jsonl-0a1b2c`),
      join(relay, 'devices', 'laptop', 'ops', '.tmp-000000000005.jsonl-0a1b2c'),
      join(relay, 'devices', 'laptop', '.tmp-ack.json-0a1b2c'),
      join(relay, 'checkpoints', '.tmp-ck-old.jsonl-0a1b2c'),
    ];
    const underWay = join(relay, 'checkpoints', '.tmp-ck-new.jsonl-0a1b2c');
    for (const path of [...leftovers, underWay]) await writeFile(path, 'x'.repeat(1000));
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await utimes(leftovers[3]!, twoHoursAgo, twoHoursAgo);

    const again = await openDirSession(relay, dataDir, 'laptop');
    const names = async (dir: string) => (await readdir(dir)).filter((name) => name.startsWith('.tmp-')).map((name) => join(dir, name));
    const left = [
      join(dataDir, 'checkpoints'),
      join(relay, 'devices', 'laptop', 'ops'),
      join(relay, 'devices', 'laptop'),
      join(relay, 'checkpoints'),
    ];
    expect((await Promise.all(left.map(names))).flat()).toEqual([underWay]);
    expect(again.status().base_checkpoint).toBe(base);
    await again.close();
  });
});
