import { describe, expect, it } from 'vitest';
import type { Session, SessionLog } from '../../src/session/session.js';
import { openDirSession } from '../helpers/dir-world.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();
const EVERY = 30;

/**
 * A session log that resolves `published` with the frontier of the first automatic checkpoint
 * and keeps the reasons of attempts that could not publish.
 */
function checkpointLog(): { log: SessionLog; published: Promise<Record<string, { seq: number }>>; refused: string[] } {
  let resolve: (frontier: Record<string, { seq: number }>) => void = () => {};
  const published = new Promise<Record<string, { seq: number }>>((r) => (resolve = r));
  const refused: string[] = [];
  const log: SessionLog = {
    info: (fields, message) => {
      if (message === 'published a checkpoint') resolve((fields as { frontier: Record<string, { seq: number }> }).frontier);
      if (message === 'no automatic checkpoint yet') refused.push((fields as { reason: string }).reason);
    },
    warn: () => {},
  };
  return { log, published, refused };
}

async function live(log: SessionLog, relay?: string): Promise<Session> {
  const session = await openDirSession(relay ?? (await tempDir()), await tempDir(), 'dev-a', { autoCheckpointOps: EVERY }, log);
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

  it('are not retried on every pump while they cannot be published', async () => {
    const relay = await tempDir();
    // A peer that wrote one op and went quiet: it never acks this device's ops.
    const peer = await openDirSession(relay, await tempDir(), 'dev-b');
    await append(peer, 0);
    await peer.pump();
    await peer.close();
    const { log, refused } = checkpointLog();
    const session = await live(log, relay);
    try {
      const started = performance.now();
      for (let i = 0; i < 10 * EVERY; i++) await append(session, i);
      await session.pump();
      const elapsed = performance.now() - started;
      // The first checkpoint covers the peer's op; after it, the stable frontier cannot move.
      expect(refused.length).toBeGreaterThan(0);
      expect(refused.every((reason) => /has not moved/.test(reason))).toBe(true);
      // Without the retry pause, every pump past the overdue mark would try again.
      expect(refused.length).toBeLessThanOrEqual(1 + Math.floor(elapsed / 5_000));
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
