import { describe, expect, it } from 'vitest';
import type { Session, SessionLog } from '../../src/session/session.js';
import { openDirSession } from '../helpers/dir-world.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();
const EVERY = 30;

/** A session log that resolves `published` with the frontier of the first automatic checkpoint. */
function checkpointLog(): { log: SessionLog; published: Promise<Record<string, { seq: number }>> } {
  let resolve: (frontier: Record<string, { seq: number }>) => void = () => {};
  const published = new Promise<Record<string, { seq: number }>>((r) => (resolve = r));
  const log: SessionLog = {
    info: (fields, message) => message === 'published a checkpoint' && resolve((fields as { frontier: Record<string, { seq: number }> }).frontier),
    warn: () => {},
  };
  return { log, published };
}

async function live(log: SessionLog): Promise<Session> {
  const session = await openDirSession(await tempDir(), await tempDir(), 'dev-a', { autoCheckpointOps: EVERY }, log);
  await session.startLive();
  return session;
}

const append = (session: Session, i: number) => session.append({ surface: 'knowledge', payload: { id: `k-${i}` }, scope: 'personal' });

/** Automatic checkpoints in live mode (proposals/session.md §Live mode). */
describe('automatic checkpoints', () => {
  it('wait for a burst of appends to end, so the checkpoint covers the whole burst', async () => {
    const { log, published } = checkpointLog();
    const session = await live(log);
    try {
      const burst = 3 * EVERY;
      await Promise.all(Array.from({ length: burst }, (_, i) => append(session, i)));
      const frontier = await published;
      expect(frontier['dev-a']?.seq).toBe(burst - 1);
    } finally {
      await session.close();
    }
  });

  it('are still published by a device that never stops appending', async () => {
    const { log, published } = checkpointLog();
    const session = await live(log);
    let done = false;
    void published.then(() => (done = true));
    try {
      let appended = 0;
      // Bounded: a device that never checkpointed would stop here and fail below.
      while (!done && appended < 40 * EVERY) await append(session, appended++);
      expect(done).toBe(true);
      expect((await published)['dev-a']!.seq).toBeLessThan(appended);
    } finally {
      await session.close();
    }
  });
});
