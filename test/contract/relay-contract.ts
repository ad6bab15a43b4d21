import { describe, expect, it } from 'vitest';
import { parseFrontier } from '../../src/oplog/frontier.js';
import { parseDeviceId, type DeviceId } from '../../src/oplog/ids.js';
import type { OpRecord } from '../../src/oplog/op-record.js';
import type { CheckpointFile, JsonObject, Relay } from '../../relay/port/relay.js';
import { PULL_PAGE_BYTES } from '../../relay/port/relay-state.js';
import { TestDevice } from '../helpers/test-device.js';
import { pageOf } from '../helpers/pull-page.js';

export interface RelayHarness {
  /** A connection for `device` (each device gets its own, as each daemon would). */
  connect(device: DeviceId): Promise<Relay>;
  /** Moves the relay's clock forward. */
  advance(ms: number): void;
}

const DAY = 86_400_000;

function frontierJson(op: OpRecord): JsonObject {
  return { [op.device_id]: { seq: op.seq, op_id: op.op_id, hlc: { ...op.hlc } } };
}

/** The relay port's guarantees, run against every backend (proposals/relay.md §Port). */
export function runRelayContract(name: string, setup: () => Promise<RelayHarness>): void {
  describe(`relay contract: ${name}`, () => {
    async function joined(harness: RelayHarness, id: string, seed: number) {
      const device = new TestDevice(id, seed);
      const relay = await harness.connect(device.id);
      await relay.register(device.publicKey);
      return {
        device,
        relay,
        ops: (n: number) =>
          Array.from({ length: n }, (_, i) => device.op('knowledge', { id: `${id}-${device.head ? device.head.seq + 1 : 0}-${i}` })),
      };
    }

    const since = (entries: Array<[DeviceId, number]> = []) => new Map(entries);

    it('accepts a chain, serves it to other devices in order, and dedups a re-push', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const ops = a.ops(5);
      expect(await a.relay.push(ops)).toEqual({ pushed: 5, deduped: 0 });
      expect(await a.relay.push(ops)).toEqual({ pushed: 0, deduped: 5 });
      const more = a.ops(3);
      expect(await a.relay.push([...ops.slice(3), ...more])).toEqual({ pushed: 3, deduped: 2 });
      const page = pageOf(await b.relay.pull(since(), 100));
      expect(page).toEqual({ ops: [...ops, ...more], more: false });
      expect(await b.relay.head(a.device.id)).toBe(7);
      expect(pageOf(await a.relay.pull(since(), 100)).ops).toEqual([]);
    });

    it('counts the bytes it holds, more once ops are pushed, the same for every device', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const before = await b.relay.bytes();
      await a.relay.push(a.ops(20));
      const after = await b.relay.bytes();
      expect(after).toBeGreaterThan(before);
      expect(await a.relay.bytes()).toBe(after);
    });

    it('refuses a different op at a held seq as a fork, and a skipped seq as a gap', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const ops = a.ops(3);
      await a.relay.push(ops);
      const twin = new TestDevice('device-a', 1);
      twin.op('knowledge', { id: 'x0' });
      const forked = twin.op('knowledge', { id: 'different' });
      await expect(a.relay.push([forked])).rejects.toMatchObject({ code: 'relay_fork', data: { seq: 1 } });
      a.ops(2);
      const skipped = a.ops(1);
      expect(await a.relay.push(skipped)).toMatchObject({ gap: { head: 2, offered: 5 } });
    });

    it("refuses another device's ops, a broken chain and a bad signature", async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      await expect(a.relay.push(b.ops(1))).rejects.toMatchObject({ code: 'relay_foreign_ops' });
      const [op] = a.ops(1);
      await expect(a.relay.push([{ ...op!, payload: { id: 'tampered' } }])).rejects.toMatchObject({
        code: 'chain_broken',
        data: { kind: 'id_mismatch' },
      });
      await expect(a.relay.push([{ ...op!, sig: b.device.resign(op!).sig }])).rejects.toMatchObject({
        code: 'chain_broken',
        data: { kind: 'bad_signature' },
      });
      expect(await a.relay.push([op!])).toEqual({ pushed: 1, deduped: 0 });
    });

    it('requires registration, and refuses a second key for a registered device', async () => {
      const h = await setup();
      const stranger = new TestDevice('device-z', 9);
      const relay = await h.connect(stranger.id);
      await expect(relay.push([stranger.op('knowledge', { id: 'x' })])).rejects.toMatchObject({ code: 'relay_not_registered' });
      await relay.register(stranger.publicKey);
      await relay.register(stranger.publicKey);
      await expect(relay.register(new TestDevice('device-z', 10).publicKey)).rejects.toMatchObject({ code: 'relay_key_conflict' });
    });

    it('pages a pull: every op exactly once, in seq order per device', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const c = await joined(h, 'device-c', 3);
      const pushed = new Map<DeviceId, OpRecord[]>();
      for (const x of [a, b]) {
        const ops = x.ops(7);
        await x.relay.push(ops);
        pushed.set(x.device.id, ops);
      }
      const frontier = new Map<DeviceId, number>();
      const seen: OpRecord[] = [];
      for (let pages = 0; ; pages++) {
        const page = pageOf(await c.relay.pull(frontier, 4));
        expect(page.ops.length).toBeLessThanOrEqual(4);
        for (const op of page.ops) {
          expect(op.seq).toBe((frontier.get(op.device_id) ?? -1) + 1);
          frontier.set(op.device_id, op.seq);
          seen.push(op);
        }
        if (!page.more) break;
        expect(pages).toBeLessThan(10);
      }
      expect(seen).toHaveLength(14);
      expect(new Set(seen.map((op) => op.op_id)).size).toBe(14);
      expect(pageOf(await c.relay.pull(new Map([[a.device.id, 5]]), 100)).ops.map((op) => `${op.device_id}:${op.seq}`)).toEqual([
        'device-a:6',
        ...pushed.get(b.device.id)!.map((op) => `device-b:${op.seq}`),
      ]);
    });

    it('keeps a pull page within its byte budget however many ops it may hold', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const c = await joined(h, 'device-c', 3);
      // 120 ops of ~1.2 MB (a turn may carry 1 MiB): ~144 MB, more than two pages may hold.
      const text = 'x'.repeat(1_200_000);
      const ops = Array.from({ length: 120 }, (_, i) => a.device.op('knowledge', { id: `big-${i}`, text }));
      for (let i = 0; i < ops.length; i += 40) await a.relay.push(ops.slice(i, i + 40));
      const frontier = new Map<DeviceId, number>();
      const pages: number[] = [];
      for (;;) {
        const page = pageOf(await c.relay.pull(frontier, 5_000));
        pages.push(page.ops.length);
        expect(page.ops.reduce((n, op) => n + JSON.stringify(op).length, 0)).toBeLessThanOrEqual(PULL_PAGE_BYTES);
        for (const op of page.ops) frontier.set(op.device_id, op.seq);
        if (!page.more) break;
        expect(pages.length).toBeLessThan(10);
      }
      expect(pages.reduce((n, count) => n + count, 0)).toBe(120);
      expect(pages.length).toBeGreaterThanOrEqual(3);
      expect(frontier.get(a.device.id)).toBe(ops.at(-1)!.seq);
    });

    it('keeps acks monotone and reports them in the roster with the stable frontier', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      await a.relay.ack(
        new Map([
          [a.device.id, 5],
          [b.device.id, 2],
        ]),
      );
      await b.relay.ack(
        new Map([
          [a.device.id, 3],
          [b.device.id, 4],
        ]),
      );
      await expect(a.relay.ack(new Map([[a.device.id, 4]]))).rejects.toMatchObject({ code: 'relay_ack_regression' });
      const view = await b.relay.roster();
      expect(view.entries.map((e) => [e.device_id, e.status, e.public_key])).toEqual([
        ['device-a', 'active', a.device.publicKey],
        ['device-b', 'active', b.device.publicKey],
      ]);
      expect(view.stable).toEqual(
        new Map([
          [a.device.id, 3],
          [b.device.id, 2],
        ]),
      );
    });

    it('evicts a device silent past the horizon and reinstates it on a caught-up ack', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      await a.relay.push(a.ops(4));
      await a.relay.ack(new Map([[a.device.id, 3]]));
      await b.relay.ack(new Map([[a.device.id, 0]]));
      h.advance(31 * DAY);
      await a.relay.ack(new Map([[a.device.id, 3]]));
      const view = await a.relay.roster();
      expect(view.entries.find((e) => e.device_id === b.device.id)?.status).toBe('evicted');
      expect(view.stable.get(a.device.id)).toBe(3);
      await b.relay.ack(new Map([[a.device.id, 3]]));
      expect((await a.relay.roster()).entries.find((e) => e.device_id === b.device.id)?.status).toBe('active');
    });

    it('stores checkpoints once, serves the latest, and streams its chunks', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const ops = a.ops(3);
      const file = (n: number): CheckpointFile => ({
        header: { checkpoint_hash: `ck-${String(n).repeat(64)}`, frontier: frontierJson(ops[n]!) },
        chunks: [JSON.stringify({ n, part: 1 }), JSON.stringify({ n, part: 2 })],
      });
      expect(await a.relay.latestCheckpoint()).toBeNull();
      expect(await a.relay.putCheckpoint(file(1))).toBe(true);
      expect(await a.relay.putCheckpoint(file(1))).toBe(false);
      await a.relay.putCheckpoint(file(2));
      await a.relay.putCheckpoint(file(0));
      expect((await a.relay.latestCheckpoint())?.checkpoint_hash).toBe(file(2).header.checkpoint_hash);
      const read = await a.relay.readCheckpoint(file(2).header.checkpoint_hash);
      const chunks = [];
      for await (const chunk of read!.chunks) chunks.push(chunk);
      expect({ header: read!.header, chunks }).toEqual(file(2));
      expect(await a.relay.readCheckpoint(`ck-${'9'.repeat(64)}`)).toBeNull();
    });

    it('serves the latest checkpoint, or the latest that covers a device up to a seq', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const [mine, theirs] = [a.ops(3), b.ops(6)];
      const file = (op: OpRecord, n: number): CheckpointFile => ({
        header: { checkpoint_hash: `ck-${String(n).repeat(64)}`, frontier: frontierJson(op) },
        chunks: [],
      });
      await a.relay.putCheckpoint(file(mine[1]!, 1));
      await b.relay.putCheckpoint(file(theirs[5]!, 2));
      expect((await a.relay.latestCheckpoint())?.checkpoint_hash).toBe(file(theirs[5]!, 2).header.checkpoint_hash);
      for (const seq of [0, 1])
        expect((await b.relay.latestCheckpoint({ device: a.device.id, seq }))?.checkpoint_hash).toBe(
          file(mine[1]!, 1).header.checkpoint_hash,
        );
      expect(await b.relay.latestCheckpoint({ device: a.device.id, seq: 2 })).toBeNull();
      expect((await a.relay.latestCheckpoint({ device: b.device.id, seq: 5 }))?.checkpoint_hash).toBe(
        file(theirs[5]!, 2).header.checkpoint_hash,
      );
    });

    it('tells every device that a checkpoint another device collected is gone, and takes it back', async () => {
      // A device that put its base back on the relay, read it there, and saw another device's
      // collection drop it must put it back again: the relay must not answer from what it read.
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const ops = a.ops(3);
      const file = (n: number): CheckpointFile => ({
        header: { checkpoint_hash: `ck-${String(n).repeat(64)}`, frontier: frontierJson(ops[n]!) },
        chunks: [JSON.stringify({ n })],
      });
      await a.relay.putCheckpoint(file(0));
      expect((await a.relay.readCheckpoint(file(0).header.checkpoint_hash))?.header).toEqual(file(0).header);
      await b.relay.putCheckpoint(file(1));
      await b.relay.putCheckpoint(file(2));
      expect((await b.relay.gc({ verified: new Map(), authentic: () => true })).droppedCheckpoints).toBe(1);
      expect(await a.relay.readCheckpoint(file(0).header.checkpoint_hash)).toBeNull();
      expect(await a.relay.checkpointBytes(file(0).header.checkpoint_hash)).toBeNull();
      expect(await a.relay.putCheckpoint(file(0))).toBe(true);
      const read = await b.relay.readCheckpoint(file(0).header.checkpoint_hash);
      const chunks = [];
      for await (const chunk of read!.chunks) chunks.push(chunk);
      expect(chunks).toEqual(file(0).chunks);
    });

    it('collects only ops below the stable frontier that a checkpoint covers; a pull below the floor is truncated', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const batches = [a.ops(3), a.ops(3), a.ops(3)];
      for (const batch of batches) await a.relay.push(batch);
      const head = batches[1]!.at(-1)!;
      await a.relay.putCheckpoint({ header: { checkpoint_hash: `ck-${'1'.repeat(64)}`, frontier: frontierJson(head) }, chunks: [] });
      await a.relay.ack(new Map([[a.device.id, 8]]));
      await b.relay.ack(new Map([[a.device.id, 1]]));
      const verified = parseFrontier(frontierJson(head))!;
      await a.relay.gc({ verified, authentic: () => true });
      const early = (await b.relay.roster()).floor.get(a.device.id)!;
      expect(early).toBeLessThanOrEqual(2);
      expect(pageOf(await b.relay.pull(new Map([[a.device.id, early - 1]]), 100)).ops).toHaveLength(9 - early);

      await b.relay.ack(new Map([[a.device.id, 8]]));
      const done = await a.relay.gc({ verified, authentic: () => true });
      const floor = (await b.relay.roster()).floor.get(a.device.id)!;
      expect(done.droppedOps).toBe(floor - early);
      expect(floor).toBeGreaterThan(early);
      expect(floor).toBeLessThanOrEqual(6);
      expect(await b.relay.pull(new Map(), 100)).toMatchObject({ truncated: { device_id: 'device-a', floor } });
      const tail = pageOf(await b.relay.pull(new Map([[a.device.id, floor - 1]]), 100));
      expect(tail.ops.at(-1)?.seq).toBe(8);
      expect(await a.relay.head(a.device.id)).toBe(8);
    });

    it('takes a first push that starts above an op a checkpoint covers, and serves it at its own seqs', async () => {
      // A relay restored empty, where another device put its base checkpoint back first.
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const ops = a.ops(5);
      const anchor = ops[1]!;
      await a.relay.putCheckpoint({ header: { checkpoint_hash: `ck-${'4'.repeat(64)}`, frontier: frontierJson(anchor) }, chunks: [] });
      expect(await a.relay.push(ops.slice(2, 4))).toEqual({ pushed: 2, deduped: 0 });
      expect(await a.relay.head(a.device.id)).toBe(3);
      expect(await a.relay.push(ops.slice(2))).toEqual({ pushed: 1, deduped: 2 });
      await expect(a.relay.push([ops[2]!, { ...ops[3]!, op_id: ops[4]!.op_id }])).rejects.toMatchObject({ code: 'relay_fork' });
      expect(pageOf(await b.relay.pull(new Map([[a.device.id, 1]]), 100)).ops.map((op) => op.seq)).toEqual([2, 3, 4]);
      expect(await b.relay.pull(new Map(), 100)).toMatchObject({ truncated: { floor: 2 } });
    });

    it('lets its reader decide which checkpoints count: a refused header is never the latest, anchors no push, and is neither kept nor collected over an accepted one', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const ops = a.ops(4);
      const accepted = { header: { checkpoint_hash: `ck-${'5'.repeat(64)}`, frontier: frontierJson(ops[0]!) }, chunks: [] };
      const forged = (n: number) => ({
        header: { checkpoint_hash: `ck-${String(n).repeat(64)}`, frontier: frontierJson(ops[1]!) },
        chunks: [],
      });
      for (const file of [accepted, forged(6), forged(7), forged(8)]) await b.relay.putCheckpoint(file);
      const authentic = (header: { checkpoint_hash: string }) => header.checkpoint_hash === accepted.header.checkpoint_hash;
      expect((await a.relay.latestCheckpoint())?.checkpoint_hash).not.toBe(accepted.header.checkpoint_hash);
      expect((await a.relay.latestCheckpoint(undefined, authentic))?.checkpoint_hash).toBe(accepted.header.checkpoint_hash);
      // A forged header names a's op 1: a push from op 2 on an empty relay must not take it as an anchor.
      expect(await a.relay.push(ops.slice(2), authentic)).toMatchObject({ gap: { head: -1, offered: ops[2]!.seq } });
      expect((await b.relay.gc({ verified: new Map(), authentic })).droppedCheckpoints).toBe(0);
      expect(await b.relay.readCheckpoint(accepted.header.checkpoint_hash)).not.toBeNull();
    });

    it("restarts a device's chain above an op a checkpoint covers: earlier readers rebase, later ones read on", async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const first = a.ops(6);
      await a.relay.push(first);
      const anchor = first[3]!;
      await expect(a.relay.restartAbove(anchor)).rejects.toMatchObject({ code: 'relay_gap' });
      await a.relay.putCheckpoint({ header: { checkpoint_hash: `ck-${'3'.repeat(64)}`, frontier: frontierJson(anchor) }, chunks: [] });
      // A device the relay does not know (it was re-created meanwhile) is told to register first.
      const stranger = await h.connect(parseDeviceId('device-x'));
      await expect(stranger.restartAbove({ seq: anchor.seq, op_id: anchor.op_id, hlc: anchor.hlc })).rejects.toMatchObject({
        code: 'relay_not_registered',
      });
      await a.relay.restartAbove({ seq: anchor.seq, op_id: anchor.op_id, hlc: anchor.hlc });
      expect(await a.relay.head(a.device.id)).toBe(-1);

      // The next push starts above the anchor: it must continue the anchor exactly.
      const later = a.ops(2);
      expect(await a.relay.push(later)).toMatchObject({ gap: { offered: later[0]!.seq } });
      expect(await a.relay.push([...first.slice(4), ...later])).toEqual({ pushed: 4, deduped: 0 });
      expect(pageOf(await b.relay.pull(new Map([[a.device.id, 3]]), 100)).ops.map((op) => op.seq)).toEqual([4, 5, 6, 7]);
      expect(await b.relay.pull(new Map([[a.device.id, 1]]), 100)).toMatchObject({ truncated: { floor: 4 } });
    });

    it('tells a reader behind a chain restarted with nothing above its anchor yet to rebase, rather than serve it nothing', async () => {
      const h = await setup();
      const a = await joined(h, 'device-a', 1);
      const b = await joined(h, 'device-b', 2);
      const ops = a.ops(4);
      await a.relay.push(ops);
      const anchor = ops[3]!;
      await a.relay.putCheckpoint({ header: { checkpoint_hash: `ck-${'5'.repeat(64)}`, frontier: frontierJson(anchor) }, chunks: [] });
      await a.relay.restartAbove({ seq: anchor.seq, op_id: anchor.op_id, hlc: anchor.hlc });
      // The device's ops are in the checkpoint only: a reader that lacks them must rebase.
      expect(await b.relay.pull(new Map(), 100)).toMatchObject({ truncated: { device_id: 'device-a', floor: 4 } });
      expect(pageOf(await b.relay.pull(new Map([[a.device.id, 3]]), 100)).ops).toEqual([]);
    });
  });
}
