import type { CheckpointHash } from '../../src/oplog/ids.js';
import { describe, expect, it } from 'vitest';
import type { Journal, JournalEntry } from '../../src/journal/journal.js';
import type { OpRecord } from '../../src/oplog/op-record.js';
import type { JsonObject } from '../../src/util/json.js';
import { TestDevice } from '../helpers/test-device.js';

export interface JournalHarness {
  /** Opens the harness's one journal, visiting its entries. */
  open(visit?: (entry: JournalEntry) => void): Promise<Journal>;
}

/** The journal port's guarantees, run against every implementation (proposals/journal.md). */
export function runJournalContract(name: string, setup: () => Promise<JournalHarness>): void {
  describe(`journal contract: ${name}`, () => {
    const device = () => new TestDevice('laptop', 1);
    const entry = (op: OpRecord, plain: JsonObject | null = op.payload): JournalEntry => ({ kind: 'op', op, plain });

    async function contents(harness: JournalHarness): Promise<JournalEntry[]> {
      const seen: JournalEntry[] = [];
      const journal = await harness.open((e) => seen.push(e));
      await journal.close();
      return seen;
    }

    it('replays, after reopening, every entry whose append resolved, in order', async () => {
      const harness = await setup();
      const d = device();
      const journal = await harness.open();
      const ops = Array.from({ length: 5 }, (_, i) => d.op('knowledge', { id: `k${i}` }));
      await journal.append([entry(ops[0]!), entry(ops[1]!)]);
      await journal.append(ops.slice(2).map((op) => entry(op)));
      await journal.close();
      expect(await contents(harness)).toEqual(ops.map((op) => entry(op)));
    });

    it('keeps call order and loses nothing when many callers append at once', async () => {
      const harness = await setup();
      const d = device();
      const journal = await harness.open();
      const ops = Array.from({ length: 200 }, (_, i) => d.op('conversation', { role: 'user', content: `m${i}`, timestamp: i }));
      await Promise.all(ops.map((op) => journal.append([entry(op)])));
      await journal.close();
      expect((await contents(harness)).map((e) => (e.kind === 'op' ? e.op.seq : -1))).toEqual(ops.map((op) => op.seq));
    });

    it('round-trips held ops (no plaintext yet) and base markers', async () => {
      const harness = await setup();
      const d = device();
      const journal = await harness.open();
      const op = d.op('knowledge', { id: 'k' });
      const base: JournalEntry = {
        kind: 'base',
        checkpoint_hash: ('ck-' + 'a'.repeat(64)) as CheckpointHash,
        frontier: new Map([[d.id, { seq: 0, op_id: op.op_id, hlc: op.hlc }]]),
      };
      await journal.rewrite({ head: [base], keep: () => false });
      await journal.append([entry(op, null)]);
      await journal.close();
      expect(await contents(harness)).toEqual([base, entry(op, null)]);
    });

    it('replay visits what is durable while appends continue', async () => {
      const harness = await setup();
      const d = device();
      const journal = await harness.open();
      const first = d.op('knowledge', { id: 'a' });
      await journal.append([entry(first)]);
      const seen: JournalEntry[] = [];
      const later = journal.append([entry(d.op('knowledge', { id: 'b' }))]);
      await journal.replay((e) => seen.push(e));
      await later;
      expect(seen[0]).toEqual(entry(first));
      await journal.close();
    });

    it('rewrite keeps the head and the kept entries, and appends made meanwhile land after them', async () => {
      const harness = await setup();
      const d = device();
      const journal = await harness.open();
      const ops = Array.from({ length: 6 }, (_, i) => d.op('knowledge', { id: `k${i}` }));
      await journal.append(ops.slice(0, 4).map((op) => entry(op)));
      const base: JournalEntry = {
        kind: 'base',
        checkpoint_hash: ('ck-' + 'b'.repeat(64)) as CheckpointHash,
        frontier: new Map([[d.id, { seq: 1, op_id: ops[1]!.op_id, hlc: ops[1]!.hlc }]]),
      };
      const rewriting = journal.rewrite({ head: [base], keep: (e) => e.kind === 'op' && e.op.seq > 1 });
      const during = journal.append(ops.slice(4).map((op) => entry(op)));
      await Promise.all([rewriting, during]);
      await journal.close();
      expect(await contents(harness)).toEqual([base, ...ops.slice(2).map((op) => entry(op))]);
    });

    it('allows one writer: a second open is refused while the first is open', async () => {
      const harness = await setup();
      const journal = await harness.open();
      await expect(harness.open()).rejects.toMatchObject({ code: 'journal_locked' });
      await journal.close();
      const again = await harness.open();
      await again.close();
    });

    it('refuses appends after close with a named error', async () => {
      const harness = await setup();
      const journal = await harness.open();
      await journal.close();
      await expect(journal.append([entry(device().op('knowledge', { id: 'x' }))])).rejects.toMatchObject({ code: 'session_closed' });
    });
  });
}
