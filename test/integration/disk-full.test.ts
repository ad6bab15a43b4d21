import { describe, expect, it } from 'vitest';
import { RpcCallError } from '../../src/rpc/rpc-client.js';
import type { Hash } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * A journal write that fails (a full disk; here a real EFBIG from `ulimit -f`) leaves the file's
 * state unknown (proposals/session.md §Journal failure): the daemon must not answer an op it could not make durable, must
 * refuse every append after it by name, must keep serving reads, and must restart whole.
 */
describe('a daemon whose journal cannot be written', () => {
  it('answers only durable appends, refuses the rest as journal_failed, keeps serving reads, and restarts with every answered op', async () => {
    const dataDir = await tempDir();
    const relay = await tempDir();
    const daemon = await DaemonProcess.start(dataDir, relay, [], { fileSizeLimitKiB: 64 });
    const client = await daemon.connect();
    const outcomes: Array<{ op_id: string } | RpcCallError> = [];
    for (let i = 0; i < 200; i++) {
      const outcome = await client
        .call<{ op_id: string }>('sync.append', { surface: 'knowledge', payload: { id: `k${i}`, text: 'x'.repeat(300) } })
        .catch((error: unknown) => {
          if (error instanceof RpcCallError) return error;
          throw error;
        });
      outcomes.push(outcome);
    }
    const firstRefusal = outcomes.findIndex((outcome) => outcome instanceof RpcCallError);
    expect(firstRefusal).toBeGreaterThan(0);
    const answered = outcomes.slice(0, firstRefusal) as Array<{ op_id: string }>;
    const refused = outcomes.slice(firstRefusal);
    // Once a write failed, nothing more is accepted, and each refusal says why.
    for (const refusal of refused) {
      expect(refusal).toBeInstanceOf(RpcCallError);
      expect(refusal).toMatchObject({
        code: -32014,
        data: { code: 'journal_failed' },
        message: expect.stringContaining('journal.log') as unknown,
      });
    }
    const before = await client.call<Hash>('sync.hash_state');
    expect(before.records).toBe(answered.length);
    expect((await client.call<{ last_error: string }>('sync.status')).last_error).toContain('journal.log');
    await client.close();
    expect((await daemon.stop()).code).toBe(0);

    const again = await DaemonProcess.start(dataDir, relay);
    const reopened = await again.connect();
    try {
      expect(await reopened.call<Hash>('sync.hash_state')).toEqual(before);
      const { records } = await reopened.call<{ records: Array<{ op_id: string }> }>('sync.records', { surface: 'knowledge', limit: 1000 });
      expect(new Set(records.map((record) => record.op_id))).toEqual(new Set(answered.map((answer) => answer.op_id)));
      await reopened.call('sync.append', { surface: 'knowledge', payload: { id: 'after-restart' } });
      expect((await reopened.call<Hash>('sync.hash_state')).records).toBe(answered.length + 1);
    } finally {
      await reopened.close();
      await again.stop();
    }
  });
});
