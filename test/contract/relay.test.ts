import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { MemoryRelayStore } from '../../relay/memory/memory-relay.js';
import { PostgresRelay } from '../../relay/postgres/postgres-relay.js';
import type { Relay } from '../../relay/port/relay.js';
import { cp, readdir, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readCheckpointChunks } from '../../relay/port/checkpoint-files.js';
import { DirectoryRelay } from '../../relay/directory/directory-relay.js';
import { MAX_SEGMENT_BYTES } from '../../relay/directory/segment-codec.js';
import { pgCoordinator } from '../../src/lease/pg-coordinator.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import type { OpRecord } from '../../src/oplog/op-record.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { usePostgres } from '../helpers/use-postgres.js';
import { coreCrypto, TestDevice } from '../helpers/test-device.js';
import { runRelayContract } from './relay-contract.js';
import { pageOf } from '../helpers/pull-page.js';

const tempDir = useTempDirs();

runRelayContract('memory', () => {
  let now = 1_700_000_000_000;
  const store = new MemoryRelayStore(coreCrypto, () => now);
  return Promise.resolve({
    connect: (device) => Promise.resolve(store.connect(device)),
    advance: (ms) => {
      now += ms;
    },
  });
});

runRelayContract('directory', async () => {
  let now = 1_700_000_000_000;
  const root = await tempDir();
  return {
    connect: (self) => DirectoryRelay.open({ root, self, crypto: coreCrypto, now: () => now }),
    advance: (ms) => {
      now += ms;
    },
  };
});

/** A registered writer on a fresh relay folder, with six ops of its chain to push. */
async function sixOpWriter() {
  const root = await tempDir();
  const device = new TestDevice('writer', 1);
  const writer = await DirectoryRelay.open({ root, self: device.id, crypto: coreCrypto });
  await writer.register(device.publicKey);
  const ops = Array.from({ length: 6 }, (_, i) => device.op('knowledge', { id: `k${i}` }));
  return { root, device, writer, ops };
}

/** A new reader of the folder at `root` pulls exactly `ops`. */
async function expectWholeChain(root: string, ops: readonly OpRecord[]): Promise<void> {
  const reader = await DirectoryRelay.open({ root, self: parseDeviceId('reader'), crypto: coreCrypto });
  expect(pageOf(await reader.pull(new Map(), 100)).ops.map((op) => op.op_id)).toEqual(ops.map((op) => op.op_id));
}

describe('directory relay files', () => {
  it('writes a push larger than a segment may be as several segments, and a reader gets every op', async () => {
    const root = await tempDir();
    const writer = new TestDevice('writer', 1);
    const relay = await DirectoryRelay.open({ root, self: writer.id, crypto: coreCrypto });
    await relay.register(writer.publicKey);
    const big = 'x'.repeat(1_200_000);
    const ops = Array.from({ length: 40 }, (_, i) => writer.op('knowledge', { id: `k${i}`, text: big }));
    expect(await relay.push(ops)).toEqual({ pushed: 40, deduped: 0 });

    const files = (await readdir(join(root, 'devices', 'writer', 'ops'))).sort();
    expect(files.length).toBeGreaterThanOrEqual(Math.ceil((40 * big.length) / MAX_SEGMENT_BYTES));
    const reader = await DirectoryRelay.open({ root, self: parseDeviceId('reader'), crypto: coreCrypto });
    const pulled = [];
    for (
      let page = pageOf(await reader.pull(new Map(), 7));
      ;
      page = pageOf(await reader.pull(new Map([[writer.id, pulled.at(-1)!.seq]]), 7))
    ) {
      pulled.push(...page.ops);
      if (!page.more) break;
    }
    expect(pulled.map((op) => op.op_id)).toEqual(ops.map((op) => op.op_id));
    expect(reader.anomalies()).toEqual({});
  });
});

describe('directory relay restores', () => {
  /** A writer with three segments of three ops, the middle one damaged by `damage`, and a reader that has reported it. */
  async function damaged(damage: (path: string) => Promise<void>) {
    const root = await tempDir();
    const device = new TestDevice('writer', 1);
    const writer = await DirectoryRelay.open({ root, self: device.id, crypto: coreCrypto });
    await writer.register(device.publicKey);
    const ops = Array.from({ length: 9 }, (_, i) => device.op('knowledge', { id: `k${i}` }));
    for (let i = 0; i < 9; i += 3) await writer.push(ops.slice(i, i + 3));
    await damage(join(root, 'devices', 'writer', 'ops', '000000000003.jsonl'));
    const reader = await DirectoryRelay.open({ root, self: parseDeviceId('reader'), crypto: coreCrypto });
    await reader.register(new TestDevice('reader', 2).publicKey);
    const first = pageOf(await reader.pull(new Map(), 100));
    return { root, writer, reader, ops, first };
  }

  /** The same device key minting another chain from seq 3 on: a fork. */
  function forkedFrom3(): ReturnType<TestDevice['op']>[] {
    const twin = new TestDevice('writer', 1, () => 1_800_000_000_000);
    const chain = Array.from({ length: 9 }, (_, i) => twin.op('knowledge', { id: i < 3 ? `k${i}` : `fork${i}` }));
    return chain.slice(3, 6);
  }

  it('asks the writer for exactly the damaged range, and the reader then reads on', async () => {
    const { root, writer, reader, ops, first } = await damaged(async (path) => truncate(path, (await readFile(path)).length - 30));
    expect(JSON.parse(await readFile(join(root, 'devices', 'reader', 'damage.json'), 'utf8'))).toEqual({
      opsync_damage: 1,
      stopped: { writer: 5 },
      checkpoints: [],
    });
    expect(first.ops.map((op) => op.seq)).toEqual([0, 1, 2, 3, 4]);
    expect((await writer.repairs()).ops).toEqual([{ first: 3, last: 5 }]);
    expect(await writer.push(ops.slice(3, 6))).toEqual({ pushed: 0, deduped: 3 });
    // The reader's report stands until it acks past it, but the writer's copy now reads whole.
    expect((await writer.repairs()).ops).toEqual([]);
    const rest = pageOf(await reader.pull(new Map([[parseDeviceId('writer'), 4]]), 100));
    expect(rest.ops.map((op) => op.op_id)).toEqual(ops.slice(5).map((op) => op.op_id));
    await reader.ack(new Map([[parseDeviceId('writer'), 8]]));
    expect(JSON.parse(await readFile(join(root, 'devices', 'reader', 'damage.json'), 'utf8'))).toEqual({
      opsync_damage: 1,
      stopped: {},
      checkpoints: [],
    });
  });

  it('asks a watching writer for the hole that a folder restored from a partial backup left in its chain', async () => {
    const root = await tempDir();
    const device = new TestDevice('writer', 1);
    const writer = await DirectoryRelay.open({ root, self: device.id, crypto: coreCrypto });
    await writer.register(device.publicKey);
    const watch = await writer.watch(() => {});
    try {
      const ops = Array.from({ length: 9 }, (_, i) => device.op('knowledge', { id: `k${i}` }));
      for (let i = 0; i < 9; i += 3) await writer.push(ops.slice(i, i + 3));
      expect((await writer.repairs()).ops).toEqual([]);
      // Backed up while a file moved: the copy lacks the middle segment. It is restored in place.
      const backup = join(await tempDir(), 'backup');
      await cp(root, backup, { recursive: true });
      await rm(join(backup, 'devices', 'writer', 'ops', '000000000003.jsonl'));
      await rename(root, join(await tempDir(), 'moved-away'));
      await cp(backup, root, { recursive: true });

      const reader = await DirectoryRelay.open({ root, self: parseDeviceId('reader'), crypto: coreCrypto });
      await reader.register(new TestDevice('reader', 2).publicKey);
      expect(pageOf(await reader.pull(new Map(), 100)).ops.map((op) => op.seq)).toEqual([0, 1, 2]);
      // The writer's next pump pulls, then asks what to mend. Its watcher, still on the folder
      // moved away, never heard the reader's report: it used to answer nothing, for good.
      pageOf(await writer.pull(new Map(), 100));
      expect((await writer.repairs()).ops).toEqual([{ first: 3, last: 5 }]);
      await writer.push(ops.slice(3, 6));
      const rest = pageOf(await reader.pull(new Map([[device.id, 2]]), 100));
      expect(rest.ops.map((op) => op.op_id)).toEqual(ops.slice(3).map((op) => op.op_id));
    } finally {
      await watch.close();
    }
  });

  it('refuses, as a gap, a push that continues the chain a folder restored from an older backup no longer holds', async () => {
    const { root, device, writer, ops } = await sixOpWriter();
    await writer.push(ops.slice(0, 2));
    const backup = join(await tempDir(), 'backup');
    await cp(root, backup, { recursive: true });
    await writer.push(ops.slice(2, 4));
    // Restored in place, as a backup tool does: the writer's next call is a push, not a read.
    for (const entry of await readdir(root)) await rm(join(root, entry), { recursive: true });
    await cp(backup, root, { recursive: true });

    expect(await writer.push(ops.slice(4))).toMatchObject({ gap: { offered: ops[4]!.seq } });
    expect(await writer.head(device.id)).toBe(1);
    await writer.push(ops.slice(2));
    await expectWholeChain(root, ops);
  });

  it('takes back, and refuses as a gap, a push whose preceding segment vanished while the relay.json stayed', async () => {
    const { root, device, writer, ops } = await sixOpWriter();
    await writer.push(ops.slice(0, 2));
    await writer.push(ops.slice(2, 4));
    // A sync tool, or a backup restored into the devices folder only, takes the newest segment away.
    const ownOps = join(root, 'devices', 'writer', 'ops');
    await rm(join(ownOps, '000000000002.jsonl'));

    expect(await writer.push(ops.slice(4))).toMatchObject({ gap: { offered: ops[4]!.seq } });
    expect((await readdir(ownOps)).filter((name) => name.endsWith('.jsonl'))).toEqual(['000000000000.jsonl']);
    expect(await writer.head(device.id)).toBe(1);
    await writer.push(ops.slice(2));
    await expectWholeChain(root, ops);
  });

  it("takes a device's first segments, gone with no checkpoint covering them, for damage to report, not history to rebase past", async () => {
    const { root, writer, ops } = await sixOpWriter();
    for (let i = 0; i < 6; i += 2) await writer.push(ops.slice(i, i + 2));
    await rm(join(root, 'devices', 'writer', 'ops', '000000000000.jsonl'));
    await rm(join(root, 'devices', 'writer', 'ops', '000000000002.jsonl'));

    const reader = await DirectoryRelay.open({ root, self: parseDeviceId('reader'), crypto: coreCrypto });
    await reader.register(new TestDevice('reader', 2).publicKey);
    expect(pageOf(await reader.pull(new Map(), 100)).ops).toEqual([]);
    expect(JSON.parse(await readFile(join(root, 'devices', 'reader', 'damage.json'), 'utf8'))).toMatchObject({ stopped: { writer: 0 } });
    expect((await writer.repairs()).ops).toEqual([{ first: 0, last: 3 }]);
    await writer.push(ops.slice(0, 4));
    expect(pageOf(await reader.pull(new Map(), 100)).ops.map((op) => op.op_id)).toEqual(ops.map((op) => op.op_id));
  });

  it('reads a segment deleted and written again, longer, under its name since a reader listed the folder', async () => {
    const { root, device, writer, ops } = await sixOpWriter();
    const more = [...ops, ...Array.from({ length: 4 }, (_, i) => device.op('knowledge', { id: `m${i}` }))];
    await writer.push(ops.slice(0, 2));
    await writer.push(ops.slice(2, 4));
    const readers = await Promise.all(
      ['reader-a', 'reader-b'].map((name) => DirectoryRelay.open({ root, self: parseDeviceId(name), crypto: coreCrypto })),
    );
    for (const reader of readers) expect(pageOf(await reader.pull(new Map(), 100)).ops).toHaveLength(4);
    // The relay loses the writer's newest segment; the writer pushes its ops again from seq 2,
    // in one segment under the same name.
    await rm(join(root, 'devices', 'writer', 'ops', '000000000002.jsonl'));
    expect(await writer.push(ops.slice(4))).toMatchObject({ gap: { offered: ops[4]!.seq } });
    await writer.push(more.slice(2, 8));
    const rewritten = pageOf(await readers[0]!.pull(new Map([[device.id, 3]]), 100));
    expect(rewritten.ops.map((op) => op.op_id)).toEqual(more.slice(4, 8).map((op) => op.op_id));
    // The next segment stands past what the header kept from before says: no gap, once read again.
    await writer.push(more.slice(8));
    const rest = pageOf(await readers[1]!.pull(new Map([[device.id, 3]]), 100));
    expect(rest.ops.map((op) => op.op_id)).toEqual(more.slice(4).map((op) => op.op_id));
  });

  it('never replaces an op it can still read, nor one that a later op names as its prev, with another', async () => {
    const truncated = await damaged(async (path) => truncate(path, (await readFile(path)).length - 30));
    await truncated.writer.repairs();
    const before = await readFile(join(truncated.root, 'devices', 'writer', 'ops', '000000000003.jsonl'));
    await expect(truncated.writer.push(forkedFrom3())).rejects.toMatchObject({ code: 'relay_fork', data: { seq: 3 } });
    expect(await readFile(join(truncated.root, 'devices', 'writer', 'ops', '000000000003.jsonl'))).toEqual(before);

    const unreadable = await damaged(async (path) => writeFile(path, 'not a segment'));
    expect((await unreadable.writer.repairs()).ops).toEqual([{ first: 3, last: 5 }]);
    await expect(unreadable.writer.push(forkedFrom3())).rejects.toMatchObject({ code: 'relay_fork', data: { seq: 6 } });
    await expect(unreadable.writer.push(unreadable.ops.slice(3, 5))).rejects.toMatchObject({ code: 'relay_gap' });
  });
});

describe('checkpoint files', () => {
  it('refuse a line longer than any sealed chunk before holding it in memory', async () => {
    const path = join(await tempDir(), 'checkpoint.jsonl');
    await writeFile(path, `{"checkpoint_hash":"ck-x"}\n${'z'.repeat(130 * 2 ** 20)}`);
    const read = async () => {
      for await (const chunk of readCheckpointChunks(path)) void chunk;
    };
    await expect(read()).rejects.toMatchObject({
      code: 'checkpoint_invalid',
      message: expect.stringContaining('longer than any checkpoint chunk') as unknown,
    });
  });
});

const postgres = usePostgres();
const opened: Relay[] = [];
// Registered after the server's hooks, so it runs before the server stops.
afterAll(async () => {
  await Promise.all(opened.map((relay) => relay.close()));
});

let database = 0;
runRelayContract('postgres', async () => {
  let now = 1_700_000_000_000;
  // A fresh database per test, so each starts from an empty relay.
  const name = `relay_${process.pid}_${database++}`;
  const url = await postgres().createDatabase(name);
  return {
    connect: async (self) => {
      const relay = await PostgresRelay.open({ url, self, crypto: coreCrypto, now: () => now });
      opened.push(relay);
      return relay;
    },
    advance: (ms) => {
      now += ms;
    },
  };
});

describe('Postgres relay schema', () => {
  it('is created once when many devices and lease backends open a fresh database at the same moment', async () => {
    const url = await postgres().createDatabase(`relay_${process.pid}_race`);
    const relays = Promise.all(
      Array.from({ length: 6 }, (_, i) => PostgresRelay.open({ url, self: parseDeviceId(`device-${i}`), crypto: coreCrypto })),
    );
    const leases = Promise.all(Array.from({ length: 6 }, () => pgCoordinator(url)));
    const [openedRelays, coordinators] = await Promise.all([relays, leases]);
    opened.push(...openedRelays);
    await Promise.all(coordinators.map((coordinator) => coordinator.close()));
    expect(openedRelays).toHaveLength(6);
  });

  it('refuses a database whose schema version it does not read, naming both versions', async () => {
    const url = await postgres().createDatabase(`relay_${process.pid}_future`);
    opened.push(await PostgresRelay.open({ url, self: parseDeviceId('device-a'), crypto: coreCrypto }));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`UPDATE opsync_meta SET value = '2' WHERE key = 'schema_version'`);
    await client.end();
    await expect(PostgresRelay.open({ url, self: parseDeviceId('device-a'), crypto: coreCrypto })).rejects.toMatchObject({
      code: 'relay_invalid',
      message: expect.stringMatching(/schema version 2; this opsync reads version 1/) as unknown,
    });
  });
});

describe('Postgres relay clock', () => {
  it("decides who is evicted by the database's clock, not by the devices' clocks", async () => {
    const url = await postgres().createDatabase(`relay_${process.pid}_clock`);
    const [a, b] = [new TestDevice('device-a', 1), new TestDevice('device-b', 2)];
    const realNow = Date.now();
    const twoYears = 2 * 365 * 86_400_000;
    let offset = 0;
    // The process's clock as the relays see it (they are opened after this).
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => realNow + offset);
    try {
      const relays = await Promise.all([a, b].map((device) => PostgresRelay.open({ url, self: device.id, crypto: coreCrypto })));
      opened.push(...relays);
      const [relayA, relayB] = relays as [PostgresRelay, PostgresRelay];
      await relayA.register(a.publicKey);
      await relayB.register(b.publicKey);
      // b's clock is two years behind when it acks; a's two years ahead when it reads the roster.
      // Stamped and judged by the devices' clocks, a would see b evicted, and b would see a evicted.
      offset = -twoYears;
      await relayB.ack(new Map());
      const fromB = await relayB.roster();
      offset = twoYears;
      const fromA = await relayA.roster();
      for (const view of [fromA, fromB]) {
        expect(view.entries.map((entry) => [entry.device_id, entry.status])).toEqual([
          ['device-a', 'active'],
          ['device-b', 'active'],
        ]);
      }
      const seen = fromA.entries.find((entry) => entry.device_id === b.id)!.last_seen_ms;
      expect(Math.abs(seen - realNow)).toBeLessThan(86_400_000);
    } finally {
      clock.mockRestore();
    }
  });
});
