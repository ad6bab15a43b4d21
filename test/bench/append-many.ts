import type { Session } from '../../src/session/session.js';
import { payloadFor } from './workload.js';

/** Appends `count` workload ops from 64 concurrent appenders (as a busy host would). */
export async function appendMany(session: Session, count: number, offset: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < count) {
        const [surface, payload] = payloadFor(offset + next++);
        await session.append({ surface, payload, scope: 'personal' });
      }
    }),
  );
}
