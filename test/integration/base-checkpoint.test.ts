import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Session } from '../../src/session/session.js';
import { openDirSession } from '../helpers/dir-world.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * A compacted journal starts with the checkpoint it is based on; a restart needs that
 * checkpoint, from the data directory or the relay. Found by the chaos test: a daemon killed
 * right after compacting onto another device's checkpoint had no copy yet, the relay collected
 * it after two newer ones, and the daemon could not start again.
 */
describe("a device's base checkpoint", () => {
  async function append(session: Session, ids: readonly string[]): Promise<void> {
    for (const id of ids) await session.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
  }

  it("is copied into the data directory before the journal names it, when it is another device's", async () => {
    const relay = await tempDir();
    const laptop = await openDirSession(relay, await tempDir(), 'laptop');
    const phoneDir = await tempDir();
    const phone = await openDirSession(relay, phoneDir, 'phone');
    await append(laptop, ['k0', 'k1']);
    await laptop.pump();
    await phone.pump();
    await laptop.pump();
    const { checkpoint_hash } = await laptop.checkpoint();
    expect(await phone.compact()).toMatchObject({ compacted: true, base_checkpoint: checkpoint_hash });
    // No pump since: the copy was made as part of the compaction, not after it.
    expect(await readdir(join(phoneDir, 'checkpoints'))).toContain(`${checkpoint_hash!}.jsonl`);
    await Promise.all([laptop.close(), phone.close()]);
  });

  it('gone from the data directory and the relay, is stood in for by a newer checkpoint on the relay', async () => {
    const relay = await tempDir();
    const laptopDir = await tempDir();
    const laptop = await openDirSession(relay, laptopDir, 'laptop');
    const phone = await openDirSession(relay, await tempDir(), 'phone');
    const sync = async () => {
      await laptop.pump();
      await phone.pump();
      await laptop.pump();
    };
    await append(laptop, ['k0', 'k1']);
    await sync();
    const first = await laptop.checkpoint();
    expect(await laptop.compact()).toMatchObject({ compacted: true, base_checkpoint: first.checkpoint_hash });
    await append(laptop, ['k2']);
    await append(phone, ['p0']);
    await sync();
    const second = await phone.checkpoint();
    expect(second.published).toBe(true);
    const state = laptop.state.stateHash();
    await laptop.close();
    await rm(join(laptopDir, 'checkpoints'), { recursive: true, force: true });
    await rm(join(relay, 'checkpoints', `${first.checkpoint_hash!}.jsonl`));

    const logged: string[] = [];
    const again = await openDirSession(
      relay,
      laptopDir,
      'laptop',
      {},
      { info: () => {}, warn: (_fields, message) => logged.push(message) },
    );
    expect(logged).toContain("this device's base checkpoint is gone; rebased onto the relay's latest");
    expect(again.status().base_checkpoint).toBe(second.checkpoint_hash);
    expect(again.state.stateHash()).toBe(state);
    await append(again, ['k3']);
    await again.pump();
    await phone.pump();
    expect(phone.state.stateHash()).toBe(again.state.stateHash());
    await Promise.all([again.close(), phone.close()]);
  });
});
