import { parseFrontier } from '../../src/oplog/frontier.js';
import { describe, expect, it } from 'vitest';
import { scopeKeyFromBytes } from '../../src/crypto/scope-key.js';
import { OpsyncError } from '../../src/util/opsync-error.js';
import type { JournalEntry } from '../../src/journal/journal.js';
import type { Session } from '../../src/session/session.js';
import type { CheckpointReport } from '../../src/session/session-reports.js';
import type { CheckpointFile, Relay } from '../../relay/port/relay.js';
import { FoldState } from '../../src/fold/fold-state.js';
import type { DeviceId } from '../../src/oplog/ids.js';
import type { ChainHead } from '../../src/oplog/op-record.js';
import { cutCheckpoint } from '../../src/session/checkpoint-seal.js';
import { coreCrypto } from '../helpers/test-device.js';
import { World } from '../helpers/world.js';

/**
 * A world where `name`'s data directory is a stale copy: its journal ends at op "x", while the
 * device went on to push op "y" from another copy of it.
 */
async function worldWithStaleCopy(name: string): Promise<World> {
  const world = new World();
  const device = await world.open(name);
  await device.append({ surface: 'knowledge', payload: { id: 'x' }, scope: 'personal' });
  await device.pump();
  await device.close();
  const stale = [...world.journals.entries(name)];
  const original = await world.open(name);
  await original.append({ surface: 'knowledge', payload: { id: 'y' }, scope: 'personal' });
  await original.pump();
  await original.close();
  const journal = world.journals.entries(name) as unknown[];
  journal.splice(0, journal.length, ...stale);
  return world;
}

/** A world where device-b wrote op "theirs" and published a checkpoint of it. */
async function worldWithCheckpoint(): Promise<{ world: World; b: Session; checkpoint: CheckpointReport }> {
  const world = new World();
  const b = await world.open('device-b');
  await b.append({ surface: 'knowledge', payload: { id: 'theirs' }, scope: 'personal' });
  await b.pump();
  const checkpoint = await b.checkpoint();
  expect(checkpoint).toMatchObject({ published: true });
  return { world, b, checkpoint };
}

async function pumpAll(...sessions: Session[]): Promise<void> {
  for (let round = 0; round < 2; round++) for (const s of sessions) await s.pump();
}

/**
 * device-a compacted onto a checkpoint of its own after op a0; device-b then published two
 * checkpoints covering a's later ops a1, a2 (and b0), and collected a's (the relay keeps two).
 * `relay` wraps device-a's relay.
 */
async function worldPastItsBase(relay?: (relay: Relay) => Relay) {
  const world = new World();
  const a = await world.open('device-a', relay ? { relay } : {});
  const b = await world.open('device-b');
  const write = async (session: Session, ids: string[]) => {
    for (const id of ids) await session.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
    await pumpAll(a, b);
  };
  await write(a, ['a0']);
  expect(await a.checkpoint()).toMatchObject({ published: true });
  expect(await a.compact()).toMatchObject({ compacted: true });
  await write(a, ['a1', 'a2']);
  expect(await b.checkpoint()).toMatchObject({ published: true });
  await write(b, ['b0']);
  expect(await b.checkpoint()).toMatchObject({ published: true });
  expect(await b.compact()).toMatchObject({ compacted: true });
  expect(await world.relays.connect(a.device).readCheckpoint(a.status().base_checkpoint!)).toBeNull();
  return { world, a, b, write };
}

/**
 * device-a and device-b compacted onto a shared checkpoint of a0, b0, then wrote a1 and b1–b3;
 * the relay was replaced by an empty one, where b put the shared base back, restarted its chain
 * above it, and published a checkpoint of its own ops only, heavier than the base. device-c
 * opened on the empty relay (so it bootstrapped from nothing), its relay wrapped by `relay`.
 */
async function worldRestoredUnderSharedBase(relay?: (relay: Relay) => Relay) {
  const world = new World();
  const empty = world.backupRelay();
  const a = await world.open('device-a');
  const b = await world.open('device-b');
  await a.append({ surface: 'knowledge', payload: { id: 'a0' }, scope: 'personal' });
  await b.append({ surface: 'knowledge', payload: { id: 'b0' }, scope: 'personal' });
  await pumpAll(a, b);
  const shared = await a.checkpoint();
  for (const session of [a, b]) expect(await session.compact()).toMatchObject({ compacted: true, base_checkpoint: shared.checkpoint_hash });
  await a.append({ surface: 'knowledge', payload: { id: 'a1' }, scope: 'personal' });
  for (const id of ['b1', 'b2', 'b3']) await b.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
  world.restoreRelay(empty);
  const c = await world.open('device-c', relay ? { relay } : {});
  world.now += 60_000; // the pumps' check of the relay is due
  await b.pump();
  expect(await b.checkpoint()).toMatchObject({ published: true });
  return { world, a, b, c };
}

describe('session', () => {
  it('converges two devices through the relay: same records, same state hash', async () => {
    const world = new World();
    const a = await world.open('device-a');
    const b = await world.open('device-b');
    await a.append({ surface: 'knowledge', payload: { id: 'k1', text: 'from a' }, scope: 'personal' });
    await b.append({ surface: 'declagent', payload: { id: 'agent', model: 'm' }, scope: 'personal' });
    const report = await a.pump();
    expect(report).toMatchObject({ pushed: 1, push_deduped: 0, folded: 0, rebased: false });
    const pulled = await b.pump();
    expect(pulled).toMatchObject({ pushed: 1, folded: 1 });
    await a.pump();
    expect(b.state.record('knowledge', 'k1')?.payload.text).toBe('from a');
    expect(a.state.record('declagent', 'agent')?.device_id).toBe('device-b');
    expect(a.state.stateHash()).toBe(b.state.stateHash());
  });

  it('refuses a bad payload, an oversize payload and a scope without a key, and writes nothing', async () => {
    const world = new World();
    const a = await world.open('device-a');
    await expect(a.append({ surface: 'knowledge', payload: { text: 'no id' }, scope: 'personal' })).rejects.toMatchObject({
      code: 'invalid_payload',
    });
    await expect(
      a.append({ surface: 'knowledge', payload: { id: 'x', text: 'y'.repeat(1_100_000) }, scope: 'personal' }),
    ).rejects.toMatchObject({ code: 'payload_too_large' });
    await expect(a.append({ surface: 'knowledge', payload: { id: 'x' }, scope: { org: 'acme' } })).rejects.toMatchObject({
      code: 'key_missing',
    });
    expect(world.journals.entries('device-a')).toHaveLength(0);
    expect((await a.append({ surface: 'knowledge', payload: { id: 'x' }, scope: 'personal' })).seq).toBe(0);
  });

  it('quarantines ops stamped too far ahead, without moving its clock, and folds them once time catches up', async () => {
    const world = new World();
    const a = await world.open('device-a');
    const b = await world.open('device-b');
    world.skew.set(a.device, 120_000);
    await a.append({ surface: 'knowledge', payload: { id: 'future' }, scope: 'personal' });
    await a.pump();
    await b.pump();
    expect(b.status().counts.quarantined).toBe(1);
    expect(b.state.record('knowledge', 'future')).toBeUndefined();
    const local = await b.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' });
    expect(local.hlc.wall_ms).toBeLessThan(world.now + 60_000);
    world.now += 90_000;
    await b.pump();
    expect(b.status().counts.quarantined).toBe(0);
    expect(b.state.record('knowledge', 'future')).toBeDefined();
  });

  it('says how far its stamps run ahead once its clock, set ahead, is set right, until time catches up', async () => {
    const world = new World();
    world.skew.set('device-a' as never, 10 * 60_000);
    const a = await world.open('device-a');
    await a.append({ surface: 'knowledge', payload: { id: 'from-the-future' }, scope: 'personal' });
    expect(a.status().clock_ahead_ms).toBe(0);
    await a.close();

    world.skew.delete('device-a' as never);
    const corrected = await world.open('device-a');
    expect(corrected.status().clock_ahead_ms).toBeGreaterThan(9 * 60_000);
    // Its next op is still stamped ahead: stamps never go back.
    const next = await corrected.append({ surface: 'knowledge', payload: { id: 'after' }, scope: 'personal' });
    expect(next.hlc.wall_ms).toBeGreaterThan(world.now + 9 * 60_000);
    world.now += 11 * 60_000;
    expect(corrected.status().clock_ahead_ms).toBe(0);
  });

  it('holds ops it cannot decrypt, reports the key id, and folds them once the key is imported', async () => {
    const world = new World();
    const other = scopeKeyFromBytes('personal', Buffer.alloc(32, 0x22));
    const a = await world.open('device-a');
    const c = await world.open('device-c', { keys: [other] });
    await c.append({ surface: 'knowledge', payload: { id: 'secret' }, scope: 'personal' });
    await c.pump();
    await a.pump();
    expect(a.status().counts.undecryptable).toBe(1);
    expect(a.status().undecryptable_kids).toEqual([other.kid]);
    expect(a.state.record('knowledge', 'secret')).toBeUndefined();
    expect(await a.importKey(other)).toBe(1);
    expect(a.state.record('knowledge', 'secret')).toBeDefined();
    expect(a.status().counts.undecryptable).toBe(0);
  });

  it('publishes a checkpoint at the stable frontier, compacts, collects relay ops, and restarts to the same state', async () => {
    const world = new World();
    const a = await world.open('device-a');
    const b = await world.open('device-b');
    for (let i = 0; i < 5; i++) {
      await a.append({ surface: 'knowledge', payload: { id: `a${i}` }, scope: 'personal' });
      await b.append({ surface: 'skill', payload: { id: `b${i}` }, scope: 'personal' });
      await pumpAll(a, b);
    }
    await pumpAll(a, b);
    const published = await a.checkpoint();
    expect(published.published).toBe(true);
    const compacted = await a.compact();
    expect(compacted).toMatchObject({ compacted: true, base_checkpoint: published.checkpoint_hash });
    expect(compacted.relay_dropped_ops).toBeGreaterThan(0);
    expect(world.journals.entries('device-a')[0]).toMatchObject({ kind: 'base', checkpoint_hash: published.checkpoint_hash });
    const hash = a.state.stateHash();
    world.crash('device-a');
    const again = await world.open('device-a');
    expect(again.state.stateHash()).toBe(hash);
    expect(again.status().base_checkpoint).toBe(published.checkpoint_hash);
  });

  it("never compacts onto a member's signed checkpoint that loses a record: it keeps its history and counts the refusal", async () => {
    const world = new World();
    const a = await world.open('device-a');
    const b = await world.open('device-b');
    for (const id of ['k0', 'k1']) await a.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
    await b.append({ surface: 'knowledge', payload: { id: 'b0' }, scope: 'personal' });
    await pumpAll(a, b);
    // device-a, a member holding every key, signs the state of every op but k1 at the full frontier.
    const state = new FoldState(coreCrypto);
    const frontier = new Map<DeviceId, ChainHead>();
    for (const entry of world.journals.entries('device-b')) {
      if (entry.kind !== 'op') continue;
      frontier.set(entry.op.device_id, { seq: entry.op.seq, op_id: entry.op.op_id, hlc: entry.op.hlc });
      if (entry.plain?.id !== 'k1') state.apply({ ...entry.op, payload: entry.plain! });
    }
    const publisher = {
      device: a.device,
      deviceKey: world.deviceKeyOf('device-a'),
      keyring: world.keyringOf('device-a'),
      crypto: coreCrypto,
    };
    await world.relays.connect(a.device).putCheckpoint(cutCheckpoint(state, frontier, publisher).file);
    expect(await b.compact()).toMatchObject({
      compacted: false,
      reason: expect.stringMatching(/not what this device folds from its own journal/) as unknown,
    });
    expect(b.stats.counters.checkpoints_refused).toBe(1);
    await b.close();
    expect((await world.open('device-b')).status().counts.records).toBe(3);
  });

  it('publishes no checkpoint when its state does not match its journal, since every device would adopt it', async () => {
    const world = new World();
    const a = await world.open('device-a');
    for (const id of ['k1', 'k2']) await a.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
    await a.pump();
    // The journal loses an op under the running session (edited by hand, a backup restored over it).
    const journal = world.journals.entries('device-a') as JournalEntry[];
    journal.splice(
      journal.findIndex((entry) => entry.kind === 'op' && entry.op.seq === 0),
      1,
    );
    expect(await a.checkpoint()).toMatchObject({
      published: false,
      reason: expect.stringContaining('does not match its journal') as unknown,
    });
    expect(await a.compact()).toMatchObject({ compacted: false, reason: 'the relay holds no checkpoint this device can authenticate' });
  });

  it('bootstraps a new device from the latest checkpoint plus the tail after GC', async () => {
    const world = new World();
    const a = await world.open('device-a');
    const b = await world.open('device-b');
    for (let i = 0; i < 6; i++) {
      await a.append({ surface: 'knowledge', payload: { id: `k${i}` }, scope: 'personal' });
      await pumpAll(a, b);
    }
    await pumpAll(a, b);
    expect((await a.checkpoint()).published).toBe(true);
    await a.compact();
    await a.append({ surface: 'knowledge', payload: { id: 'tail' }, scope: 'personal' });
    await a.pump();
    const c = await world.open('device-c');
    expect(c.status().base_checkpoint).not.toBeNull();
    await c.pump();
    expect(c.state.record('knowledge', 'tail')).toBeDefined();
    expect(c.state.stateHash()).toBe(a.state.stateHash());
  });

  it('does not compact onto a checkpoint older than its base, and a rebase onto it keeps what the base covers', async () => {
    const world = new World();
    const a = await world.open('device-a');
    const publishAndCompact = async (id: string) => {
      await a.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
      await a.pump();
      const published = await a.checkpoint();
      expect(await a.compact()).toMatchObject({ compacted: true, base_checkpoint: published.checkpoint_hash });
      return published.checkpoint_hash!;
    };
    await publishAndCompact('x');
    const newer = await publishAndCompact('y');
    // The relay is restored from a backup taken before the newer checkpoint.
    world.relays.checkpoints.delete(newer);
    const behind = `covers device device-a only below seq 1, which this device's base ${newer} covers`;
    expect(await a.compact()).toMatchObject({ compacted: false, reason: expect.stringContaining(behind) as unknown });
    // A rebase used to move onto it, and the device lost "y" from its state. The older checkpoint
    // merged with the base is the base itself, which goes back on the relay.
    expect(await a.rebase()).toMatchObject({ rebased: true, base_checkpoint: newer });
    expect(world.relays.checkpoints.has(newer)).toBe(true);
    expect(a.state.record('knowledge', 'y')).toBeDefined();
    await a.close();
    const reopened = await world.open('device-a');
    expect(reopened.state.record('knowledge', 'y')).toBeDefined();
  });

  it('rebases onto a checkpoint that covers another device less far than its base by merging the two', async () => {
    const world = new World();
    const b = await world.open('device-b');
    const c = await world.open('device-c');
    await b.append({ surface: 'knowledge', payload: { id: 'b0' }, scope: 'personal' });
    await pumpAll(b, c);
    const backup = world.backupRelay();
    const a = await world.open('device-a');
    await b.append({ surface: 'knowledge', payload: { id: 'b1' }, scope: 'personal' });
    await pumpAll(a, b, c);
    const base = await b.checkpoint();
    expect(await a.compact()).toMatchObject({ compacted: true, base_checkpoint: base.checkpoint_hash });
    await a.close();

    // The relay is restored from the backup: b1 and the checkpoint are gone until b refills them.
    // A new device joins and folds b0 only, so the next checkpoint covers b less far than a's base.
    world.restoreRelay(backup);
    const d = await world.open('device-d');
    for (const id of ['c0', 'c1']) await c.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
    await pumpAll(c, d, b);
    const short = await c.checkpoint();
    expect(short).toMatchObject({ published: true });
    expect(await c.compact()).toMatchObject({ compacted: true, relay_dropped_ops: 1 });

    // a now needs c0, which only that checkpoint holds, and b1, which only its own base holds
    // (b has not put it back on the relay yet). It used to wait, saying it could not rebase.
    const returned = await world.open('device-a');
    expect(await returned.pump()).toMatchObject({ rebased: true });
    const merged = returned.status().base_checkpoint;
    expect([base.checkpoint_hash, short.checkpoint_hash]).not.toContain(merged);
    expect(world.relays.checkpoints.has(merged!)).toBe(true);
    expect(returned.stats.counters.checkpoints_merged).toBe(1);
    for (const id of ['b0', 'b1', 'c0', 'c1']) expect(returned.state.record('knowledge', id), id).toBeDefined();

    world.now += 11_000; // b's periodic relay check puts b1 back
    await pumpAll(returned, b, c, d);
    expect(returned.state.stateHash()).toBe(b.state.stateHash());
    expect(d.state.stateHash()).toBe(b.state.stateHash());
    // A new device bootstraps from the merge.
    const e = await world.open('device-e');
    expect(e.status().base_checkpoint).toBe(merged);
    await e.pump();
    expect(e.state.stateHash()).toBe(b.state.stateHash());
    await returned.close();
    const again = await world.open('device-a');
    expect(again.state.stateHash()).toBe(b.state.stateHash());
  });

  it("puts its base back on a relay that lost it merged with the relay's latest checkpoint, so a device behind both can sync", async () => {
    const world = new World();
    const empty = world.backupRelay();
    const c = await world.open('device-c');
    for (let i = 0; i < 5; i++) await c.append({ surface: 'knowledge', payload: { id: `c${i}` }, scope: 'personal' });
    await c.pump();
    expect(await c.checkpoint()).toMatchObject({ published: true });
    expect(await c.compact()).toMatchObject({ compacted: true });
    await c.close();

    // The relay is replaced by an empty one, where b writes and collects its ops behind a checkpoint of its own.
    world.restoreRelay(empty);
    const b = await world.open('device-b');
    for (let i = 0; i < 3; i++) await b.append({ surface: 'knowledge', payload: { id: `b${i}` }, scope: 'personal' });
    await b.pump();
    const theirs = await b.checkpoint();
    expect(await b.compact()).toMatchObject({ compacted: true, relay_dropped_ops: 2 });

    // c comes back: its ops are gone from the relay and its journal starts past them, so it puts
    // its base back and restarts its chain above it. Its base alone (the heavier checkpoint, so
    // the latest) would not cover b's collected ops: c itself, and any device behind both, would
    // then find no checkpoint to rebase onto.
    const returned = await world.open('device-c');
    await pumpAll(returned, b);
    const latest = await world.relays.connect(returned.device).latestCheckpoint();
    expect(latest?.checkpoint_hash).not.toBe(theirs.checkpoint_hash);
    expect(Object.keys(latest!.frontier as object).sort()).toEqual(['device-b', 'device-c']);
    expect(returned.stats.counters.checkpoints_merged).toBe(1);
    for (const id of ['b0', 'b2', 'c0', 'c4']) expect(returned.state.record('knowledge', id), id).toBeDefined();
    expect(returned.state.stateHash()).toBe(b.state.stateHash());
    const fresh = await world.open('device-d');
    await fresh.pump();
    expect(fresh.state.stateHash()).toBe(b.state.stateHash());
  });

  it('restarts its chain on a relay that lost its ops above the latest checkpoint, which no other device collects', async () => {
    // Another device collects right after each checkpoint put: a base put back on the relay,
    // covering less than the two checkpoints after it, would be gone again before the restart.
    let collector: Relay | null = null;
    const { world, a, b, write } = await worldPastItsBase((relay) =>
      Object.assign(Object.create(relay) as Relay, {
        putCheckpoint: async (file: CheckpointFile) =>
          (await relay.putCheckpoint(file)) &&
          (await collector?.gc({ verified: parseFrontier(file.header.frontier) ?? new Map(), authentic: () => true }), true),
      }),
    );
    collector = world.relays.connect(b.device);
    await write(a, ['a3']);

    // The relay loses device-a's ops (its folder of ops deleted); its journal starts past its base.
    Object.assign(world.relays.devices.get(a.device)!, { ops: [], floor: 0 });
    world.now += 60_000; // the pump's check of the relay is due
    await a.pump();
    expect(await world.relays.connect(a.device).head(a.device)).toBe(3);
    const fresh = await world.open('device-c');
    await pumpAll(a, b, fresh);
    for (const id of ['a0', 'a3', 'b0']) expect(fresh.state.record('knowledge', id), id).toBeDefined();
    expect(fresh.state.stateHash()).toBe(a.state.stateHash());
    expect(b.state.stateHash()).toBe(a.state.stateHash());
  });

  it('pushes nothing the restart anchor covers when it restarts its chain with those ops still queued', async () => {
    const { world, a, b } = await worldPastItsBase();
    await a.close();

    // The relay loses device-a's ops; a starts again and queues its journal's ops above its base
    // (a1, a2), which the latest checkpoint, its restart anchor, already covers.
    Object.assign(world.relays.devices.get(a.device)!, { ops: [], floor: 0 });
    const back = await world.open('device-a');
    await pumpAll(back, b);
    await back.append({ surface: 'knowledge', payload: { id: 'a3' }, scope: 'personal' });
    await pumpAll(back, b);
    expect(await world.relays.connect(back.device).head(back.device)).toBe(3);
    expect(b.state.record('knowledge', 'a3')).toBeDefined();
    expect(b.state.stateHash()).toBe(back.state.stateHash());
  });

  it('restarts its chain above a base the relay holds but a heavier checkpoint does not cover by putting back the merge of the two', async () => {
    const { world, a, b, c } = await worldRestoredUnderSharedBase();
    // a restarts above the base, which the relay holds: devices behind it (c) rebase onto the
    // latest checkpoint, which must cover a's chain up to where the relay now starts it.
    await a.pump();
    const latest = await world.relays.connect(a.device).latestCheckpoint();
    expect(Object.keys(latest!.frontier as object).sort()).toEqual(['device-a', 'device-b']);
    await pumpAll(a, b, c);
    for (const id of ['a0', 'a1', 'b0', 'b3']) expect(c.state.record('knowledge', id), id).toBeDefined();
    expect(c.state.stateHash()).toBe(a.state.stateHash());
    expect(b.state.stateHash()).toBe(a.state.stateHash());
  });

  it('rebases again in one pump when another device restarts its chain between its rebase and its next pull', async () => {
    let a: Session | null = null;
    let pulls = 0;
    // device-c's second pull waits for device-a's pump, which restarts a's chain above a checkpoint.
    const racing = (relay: Relay) =>
      Object.assign(Object.create(relay) as Relay, {
        pull: async (...args: Parameters<Relay['pull']>) => (++pulls === 2 && (await a!.pump()), relay.pull(...args)),
      });
    const { b, c, ...rest } = await worldRestoredUnderSharedBase(racing);
    a = rest.a;
    // c pulls b's chain from its start: truncated, it rebases onto b's checkpoint. Then a's chain
    // restarts above the merge of the base and that checkpoint: truncated again, onto the merge.
    const report = await c.pump();
    expect(pulls).toBeGreaterThan(2);
    expect(report.rebased).toBe(true);
    await pumpAll(a, b, c);
    for (const id of ['a0', 'a1', 'b0', 'b3']) expect(c.state.record('knowledge', id), id).toBeDefined();
    expect(c.state.stateHash()).toBe(a.state.stateHash());
    expect(b.state.stateHash()).toBe(a.state.stateHash());
  });

  it('merges in the checkpoint a chain restarted above when the latest, published as it restarted, does not cover that chain', async () => {
    const HORIZON = 60_000;
    const world = new World(HORIZON);
    // While `racing`, device-b reads the relay as it was before device-a's checkpoint landed.
    let racing = false;
    const late = (relay: Relay) =>
      Object.assign(Object.create(relay) as Relay, {
        latestCheckpoint: (...args: Parameters<Relay['latestCheckpoint']>) =>
          racing ? Promise.resolve(null) : relay.latestCheckpoint(...args),
        putCheckpoint: (file: CheckpointFile) => ((racing = false), relay.putCheckpoint(file)),
      });
    const a = await world.open('device-a');
    const b = await world.open('device-b', { relay: late });
    const write = async (session: Session, ids: string[]) => {
      for (const id of ids) await session.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
      await session.pump();
    };
    await write(a, ['a0']);
    await write(b, ['b0']);
    await pumpAll(a, b);
    const backup = world.backupRelay();

    // Each device, the other silent past the horizon, publishes a checkpoint of its own later ops
    // and compacts onto it: b on the relay, a on the relay restored from the backup.
    world.now += HORIZON + 1_000;
    await write(b, ['b1', 'b2', 'b3']);
    expect(await b.checkpoint()).toMatchObject({ published: true });
    expect(await b.compact()).toMatchObject({ compacted: true });
    const ofB = b.status().base_checkpoint!;
    world.restoreRelay(backup);
    world.now += HORIZON + 1_000;
    await write(a, ['a1', 'a2', 'a3', 'a4', 'a5']);
    await a.pump();

    // b restarts its chain above its base, which it puts back having found no checkpoint to merge
    // it with: a's, heavier (the latest) and without b1–b3, lands meanwhile.
    racing = true;
    const ofA = (await a.checkpoint()).checkpoint_hash!;
    await write(b, ['b4']);
    expect(racing).toBe(false);
    expect(await world.relays.connect(a.device).readCheckpoint(ofB)).not.toBeNull();
    expect((await world.relays.connect(a.device).latestCheckpoint())!.checkpoint_hash).toBe(ofA);

    // A new device adopts a's checkpoint, cannot pull b past the floor of its restarted chain, and
    // rebases onto the merge of a's checkpoint with b's, which it publishes.
    const c = await world.open('device-c');
    expect((await c.pump()).rebased).toBe(true);
    expect(c.stats.counters.checkpoints_merged).toBe(1);
    await pumpAll(a, b, c);
    for (const id of ['a5', 'b0', 'b3', 'b4']) expect(c.state.record('knowledge', id), id).toBeDefined();
    expect(c.state.stateHash()).toBe(a.state.stateHash());
    expect(b.state.stateHash()).toBe(a.state.stateHash());
  });

  it('keeps a local copy of a checkpoint before its journal names it, so a crash and a relay that then loses it lose nothing', async () => {
    const world = new World();
    const a = await world.open('device-a');
    const b = await world.open('device-b');
    await a.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' });
    await b.append({ surface: 'knowledge', payload: { id: 'theirs' }, scope: 'personal' });
    await pumpAll(a, b);
    expect(await b.checkpoint()).toMatchObject({ published: true });
    expect(await a.rebase()).toMatchObject({ rebased: true });
    // Killed before any pump, and the relay is restored from a backup without the checkpoint.
    world.crash('device-a');
    world.relays.checkpoints.clear();
    const reopened = await world.open('device-a');
    expect(reopened.state.record('knowledge', 'mine')).toBeDefined();
    expect(reopened.state.record('knowledge', 'theirs')).toBeDefined();
  });

  it('fails a start whose base is gone everywhere as relay_unavailable while the relay cannot be asked for one to stand in, and starts once it can', async () => {
    const { world, b, checkpoint } = await worldWithCheckpoint();
    const a = await world.open('device-a');
    await a.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' });
    await pumpAll(a, b);
    expect(await a.rebase()).toMatchObject({ rebased: true, base_checkpoint: checkpoint.checkpoint_hash });
    await a.close();
    // Its copy of the base is lost, and the relay lost the checkpoint too (restored from a backup).
    await world.checkpointsOf('device-a').discard(checkpoint.checkpoint_hash!);
    world.relays.checkpoints.clear();
    expect(await b.checkpoint()).toMatchObject({ published: true });

    // The relay says the base is gone, then drops the request for the latest checkpoint. A start
    // that cannot ask is not one that has nothing to ask for: it is named as the relay being out of reach.
    const dropping = (relay: Relay) =>
      Object.assign(Object.create(relay) as Relay, {
        latestCheckpoint: () => Promise.reject(new OpsyncError('relay_unavailable', 'The relay is out of reach: the request was dropped.')),
      });
    await expect(world.open('device-a', { relay: dropping })).rejects.toMatchObject({ code: 'relay_unavailable' });
    const back = await world.open('device-a');
    expect(back.status().base_checkpoint).toBe((await world.relays.connect(b.device).latestCheckpoint())!.checkpoint_hash);
    await pumpAll(back, b);
    for (const id of ['mine', 'theirs']) expect(back.state.record('knowledge', id), id).toBeDefined();
    expect(back.state.stateHash()).toBe(b.state.stateHash());
  });

  it('copies its bootstrap checkpoint before its first op, so a crash before its first pump and a relay that then loses it lose nothing', async () => {
    const { world, b } = await worldWithCheckpoint();
    const fresh = await world.open('device-c');
    const base = fresh.status().base_checkpoint;
    expect(base).not.toBeNull();
    await fresh.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' });
    // Killed before its first pump, and the relay is restored from a backup without the checkpoint.
    // (The copy used to be made after the first pump only: this start failed, naming the checkpoint.)
    world.crash('device-c');
    world.relays.checkpoints.clear();
    const again = await world.open('device-c');
    expect(again.status().base_checkpoint).toBe(base);
    await pumpAll(again, b);
    for (const id of ['mine', 'theirs']) expect(again.state.record('knowledge', id), id).toBeDefined();
    expect(again.state.stateHash()).toBe(b.state.stateHash());
  });

  it('writes no op over a bootstrap checkpoint it cannot copy, and moves onto the latest one when the relay lost it', async () => {
    const { world, b, checkpoint: first } = await worldWithCheckpoint();
    // Its copy of the checkpoint cannot be read from the relay.
    const link = { down: true, only: ['checkpointBytes'] };
    const fresh = await world.open('device-c', { relay: (relay) => unreachableWhileDown(relay, link) });
    expect(fresh.status().base_checkpoint).toBe(first.checkpoint_hash);
    await expect(fresh.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' })).rejects.toMatchObject({
      code: 'relay_unavailable',
      message: expect.stringContaining(`writes no op until it holds a copy of checkpoint ${first.checkpoint_hash}`) as unknown,
    });
    expect(world.journals.entries('device-c').filter((entry) => entry.kind === 'op')).toHaveLength(0);
    // The relay comes back without that checkpoint (restored from an older backup), and gets a newer one.
    world.relays.checkpoints.delete(first.checkpoint_hash!);
    link.down = false;
    await b.append({ surface: 'knowledge', payload: { id: 'later' }, scope: 'personal' });
    await pumpAll(b, fresh);
    const newer = await b.checkpoint();
    expect(newer).toMatchObject({ published: true });
    expect((await fresh.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' })).seq).toBe(0);
    expect(fresh.status().base_checkpoint).toBe(newer.checkpoint_hash);
    world.crash('device-c');
    world.relays.checkpoints.clear();
    const again = await world.open('device-c');
    await pumpAll(again, b);
    for (const id of ['mine', 'theirs', 'later']) expect(again.state.record('knowledge', id), id).toBeDefined();
    expect(again.state.stateHash()).toBe(b.state.stateHash());
  });

  it('makes the copy its bootstrap never made when it starts again, before its first op', async () => {
    const { world, b } = await worldWithCheckpoint();
    const link = { down: true, only: ['checkpointBytes'] };
    const fresh = await world.open('device-c', { relay: (relay) => unreachableWhileDown(relay, link) });
    const base = fresh.status().base_checkpoint;
    // Killed before the background copy could be made; it starts again, the copy still failing.
    world.crash('device-c');
    const again = await world.open('device-c', { relay: (relay) => unreachableWhileDown(relay, link) });
    expect(again.status().base_checkpoint).toBe(base);
    await expect(again.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' })).rejects.toMatchObject({
      code: 'relay_unavailable',
    });
    link.down = false;
    expect((await again.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' })).seq).toBe(0);
    // The relay then loses the checkpoint, and the device is killed: its copy is what it starts from.
    world.crash('device-c');
    world.relays.checkpoints.clear();
    const third = await world.open('device-c');
    expect(third.status().base_checkpoint).toBe(base);
    await pumpAll(third, b);
    expect(third.state.stateHash()).toBe(b.state.stateHash());
  });

  it('goes on taking appends when its base is found nowhere while it runs, rather than wait for a copy no one can give', async () => {
    const world = new World();
    const a = await world.open('device-a');
    await a.append({ surface: 'knowledge', payload: { id: 'x' }, scope: 'personal' });
    await a.pump();
    expect(await a.checkpoint()).toMatchObject({ published: true });
    expect(await a.compact()).toMatchObject({ compacted: true });
    // Its copy and the relay's are both lost; a checkpoint, which loads the base, fails by name.
    await world.checkpointsOf('device-a').keepOnly(new Set());
    world.relays.checkpoints.clear();
    await a.append({ surface: 'knowledge', payload: { id: 'y' }, scope: 'personal' });
    await a.pump();
    await expect(a.checkpoint()).rejects.toMatchObject({ code: 'checkpoint_not_found' });
    expect((await a.append({ surface: 'knowledge', payload: { id: 'z' }, scope: 'personal' })).seq).toBe(2);
  });

  it('starts a bootstrapped device over before its first op when the relay lost every checkpoint before it could copy one', async () => {
    const { world, b } = await worldWithCheckpoint();
    const link = { down: true, only: ['checkpointBytes'] };
    const fresh = await world.open('device-c', { relay: (relay) => unreachableWhileDown(relay, link) });
    expect(fresh.state.record('knowledge', 'theirs')).toBeDefined();
    // The relay is replaced by an empty one before the copy could be made.
    world.restoreRelay({ devices: new Map(), checkpoints: new Map() });
    link.down = false;
    expect((await fresh.append({ surface: 'knowledge', payload: { id: 'mine' }, scope: 'personal' })).seq).toBe(0);
    expect(fresh.status().base_checkpoint).toBeNull();
    // Within ten seconds b registers again on the empty relay and puts its op back.
    world.now += 11_000;
    await pumpAll(b, fresh);
    for (const id of ['mine', 'theirs']) expect(fresh.state.record('knowledge', id), id).toBeDefined();
    expect(fresh.state.stateHash()).toBe(b.state.stateHash());
    world.crash('device-c');
    const again = await world.open('device-c');
    expect(again.state.stateHash()).toBe(b.state.stateHash());
  });

  it('starts a device that never wrote an op over when its bootstrap checkpoint is gone everywhere', async () => {
    const { world, b } = await worldWithCheckpoint();
    const fresh = await world.open('device-c');
    expect(fresh.status().base_checkpoint).not.toBeNull();
    // Its data directory loses the copy, and the relay loses the checkpoint.
    await fresh.close();
    await world.checkpointsOf('device-c').keepOnly(new Set());
    world.relays.checkpoints.clear();
    const again = await world.open('device-c');
    expect(again.status().base_checkpoint).toBeNull();
    await again.pump();
    expect(again.state.stateHash()).toBe(b.state.stateHash());
  });

  it('refuses to open a cloned device whose chain on the relay is ahead of its journal', async () => {
    const world = await worldWithStaleCopy('device-a');
    await expect(world.open('device-a')).rejects.toMatchObject({ code: 'device_cloned' });
  });
});

/** A relay that answers relay_unavailable to everything (or to the methods in `link.only`) while `link.down`, as an unreachable one does. */
function unreachableWhileDown(relay: Relay, link: { down: boolean; only?: readonly string[] }): Relay {
  return new Proxy(relay, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function' || ['anomalies', 'close'].includes(String(property))) return value;
      if (link.only && !link.only.includes(String(property))) return value;
      return (...args: unknown[]) =>
        link.down
          ? Promise.reject(new OpsyncError('relay_unavailable', 'The relay cannot be reached.'))
          : (value as (...a: unknown[]) => unknown).apply(target, args);
    },
  });
}

describe('acks', () => {
  it('are not held back after the wall clock is set back (until it got there again, the stable frontier stalled)', async () => {
    const world = new World();
    const a = await world.open('device-a', { session: { ackIntervalMs: 250 } });
    await a.append({ surface: 'knowledge', payload: { id: 'k1' }, scope: 'personal' });
    expect(await a.pump()).toMatchObject({ pushed: 1, acked: 1 });
    world.now -= 60 * 60_000;
    await a.append({ surface: 'knowledge', payload: { id: 'k2' }, scope: 'personal' });
    expect(await a.pump()).toMatchObject({ pushed: 1, acked: 1 });
    await a.pump();
    expect(a.status().stable_frontier).toEqual({ 'device-a': 1 });
    await a.close();
  });
});

describe('live sync', () => {
  it('pumps at a fixed interval when the relay cannot be watched (the system ran out of file watchers), and says so', async () => {
    const world = new World();
    const warnings: string[] = [];
    const log = { info: () => {}, warn: (_fields: object, message: string) => warnings.push(message) };
    const unwatchable = (relay: Relay): Relay =>
      new Proxy(relay, {
        get: (target, property, receiver) =>
          property === 'watch'
            ? () => Promise.reject(new Error('ENOSPC: System limit for number of file watchers reached'))
            : (Reflect.get(target, property, receiver) as unknown),
      });
    const a = await world.open('device-a');
    const b = await world.open('device-b', { relay: unwatchable, log });
    try {
      await b.startLive();
      expect(warnings).toContain('cannot watch the relay for changes: pumping at a fixed interval instead');
      const folded = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("device-b never folded device-a's op")), 30_000);
        b.onChange(() => {
          if (!b.state.record('knowledge', 'k1')) return;
          clearTimeout(timer);
          resolve();
        });
      });
      await a.append({ surface: 'knowledge', payload: { id: 'k1' }, scope: 'personal' });
      await a.pump();
      await folded;
    } finally {
      await b.close();
      await a.close();
    }
  });
});

describe('starting while the relay cannot be reached', () => {
  it('opens from the journal, takes appends, and syncs them once the relay is back', async () => {
    const world = new World();
    const link = { down: false };
    const a = await world.open('device-a', { relay: (relay) => unreachableWhileDown(relay, link) });
    const b = await world.open('device-b');
    await a.append({ surface: 'knowledge', payload: { id: 'before' }, scope: 'personal' });
    await pumpAll(a, b);
    await a.close();

    link.down = true;
    const offline = await world.open('device-a', { relay: (relay) => unreachableWhileDown(relay, link) });
    expect(offline.state.record('knowledge', 'before')).toBeDefined();
    expect(offline.status().last_error).toContain('cannot be reached');
    await offline.append({ surface: 'knowledge', payload: { id: 'offline' }, scope: 'personal' });
    await expect(offline.pump()).rejects.toMatchObject({ code: 'relay_unavailable' });

    link.down = false;
    expect(await offline.pump()).toMatchObject({ pushed: 1 });
    await pumpAll(offline, b);
    expect(b.state.record('knowledge', 'offline')).toBeDefined();
    expect(b.state.stateHash()).toBe(offline.state.stateHash());
  });

  it('opens a new device with an empty journal, which joins once the relay is back', async () => {
    const world = new World();
    const b = await world.open('device-b');
    await b.append({ surface: 'knowledge', payload: { id: 'from-b' }, scope: 'personal' });
    await b.pump();
    const link = { down: true };
    const fresh = await world.open('device-c', { relay: (relay) => unreachableWhileDown(relay, link) });
    await fresh.append({ surface: 'knowledge', payload: { id: 'from-c' }, scope: 'personal' });
    link.down = false;
    await pumpAll(fresh, b);
    expect(fresh.state.record('knowledge', 'from-b')).toBeDefined();
    expect(b.state.record('knowledge', 'from-c')).toBeDefined();
    expect(b.state.stateHash()).toBe(fresh.state.stateHash());
  });

  it('stops a clone at the first pump that reaches the relay, before it pushes anything', async () => {
    const world = await worldWithStaleCopy('device-a');

    const link = { down: true };
    const clone = await world.open('device-a', { relay: (relay) => unreachableWhileDown(relay, link) });
    await clone.append({ surface: 'knowledge', payload: { id: 'forked' }, scope: 'personal' });
    link.down = false;
    await expect(clone.pump()).rejects.toMatchObject({ code: 'device_cloned' });
    await expect(clone.append({ surface: 'knowledge', payload: { id: 'more' }, scope: 'personal' })).rejects.toMatchObject({
      code: 'device_cloned',
    });
    const other = await world.open('device-b');
    await other.pump();
    expect(other.state.record('knowledge', 'y')).toBeDefined();
    expect(other.state.record('knowledge', 'forked')).toBeUndefined();
  });

  it('keeps its memory in step with its journal when the relay fails right after a rebase rewrote the journal', async () => {
    // Found by the simulation: a rebase in a pump wrote its new base to the journal, then asked
    // the relay for this device's head and failed; memory kept the old base (none), so the next
    // checkpoint was cut from the journal's ops alone and lost everything the base covered.
    const world = new World();
    const a = await world.open('device-a');
    // Two checkpoints, so that the relay collects the ops below the older one.
    let dropped = 0;
    for (const id of ['covered-by-the-checkpoint', 'covered-too']) {
      await a.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
      await a.pump();
      expect(await a.checkpoint()).toMatchObject({ published: true });
      dropped += (await a.compact()).relay_dropped_ops ?? 0;
    }
    expect(dropped).toBeGreaterThan(0);
    await a.append({ surface: 'knowledge', payload: { id: 'after-the-checkpoints' }, scope: 'personal' });
    await a.pump();

    // device-c starts offline, so its first pump meets the collected op and rebases; the relay
    // fails the fourth head request (after the first contact's, the refill's and the rebase's own
    // check: the one the rebase made after rewriting the journal).
    const link = { down: true, heads: 0 };
    const flaky = (relay: Relay): Relay =>
      new Proxy(unreachableWhileDown(relay, link), {
        get: (target, property, receiver) =>
          property === 'head' && !link.down && ++link.heads === 4
            ? () => Promise.reject(new OpsyncError('relay_unavailable', 'The relay cannot be reached.'))
            : (Reflect.get(target, property, receiver) as unknown),
      });
    const c = await world.open('device-c', { relay: flaky });
    link.down = false;
    await c.pump().catch(() => undefined);
    await pumpAll(c, a);
    expect(await c.checkpoint()).toMatchObject({ published: true });
    expect(await c.compact()).toMatchObject({ compacted: true });
    world.crash('device-c');
    const restarted = await world.open('device-c');
    expect(restarted.state.record('knowledge', 'covered-by-the-checkpoint')).toBeDefined();
    expect(restarted.state.stateHash()).toBe(a.state.stateHash());
  });

  it('finds the clone before a checkpoint or compaction too, when one comes before any pump', async () => {
    const world = await worldWithStaleCopy('device-a');
    const link = { down: true };
    const clone = await world.open('device-a', { relay: (relay) => unreachableWhileDown(relay, link) });
    link.down = false;
    await expect(clone.compact()).rejects.toMatchObject({ code: 'device_cloned' });
    await expect(clone.checkpoint()).rejects.toMatchObject({ code: 'device_cloned' });
  });
});

describe('eviction and straggler re-entry', () => {
  it('a device silent past the horizon stops holding the frontier back, and on return rebases without losing its own unsynced ops', async () => {
    const HORIZON = 60_000;
    const world = new World(HORIZON);
    const a = await world.open('device-a');
    const b = await world.open('device-b');
    await a.append({ surface: 'knowledge', payload: { id: 'early' }, scope: 'personal' });
    await pumpAll(a, b);

    await b.append({ surface: 'knowledge', payload: { id: 'written-offline' }, scope: 'personal' });
    world.now += HORIZON + 1_000;
    for (let i = 0; i < 4; i++) {
      await a.append({ surface: 'knowledge', payload: { id: `while-away-${i}` }, scope: 'personal' });
      await a.pump();
    }
    const roster = (await a.pump(), a.status().roster);
    expect(roster.find((r) => r.device_id === 'device-b')?.status).toBe('evicted');
    expect((await a.checkpoint()).published).toBe(true);
    const compacted = await a.compact();
    expect(compacted.relay_dropped_ops).toBeGreaterThan(0);

    const back = await b.pump();
    expect(back.rebased).toBe(true);
    await pumpAll(a, b);
    expect(b.state.record('knowledge', 'while-away-3')).toBeDefined();
    expect(a.state.record('knowledge', 'written-offline')).toBeDefined();
    expect(b.state.stateHash()).toBe(a.state.stateHash());
    expect(a.status().roster.find((r) => r.device_id === 'device-b')?.status).toBe('active');
  });
});

describe('the change feed', () => {
  it('makes one change of the appends of one turn, naming their surfaces, and another of what a pump folds', async () => {
    const world = new World();
    const a = await world.open('device-a');
    const b = await world.open('device-b');
    try {
      const heard: Array<{ change: number; surfaces: readonly string[]; origins: readonly string[]; folded: number }> = [];
      b.onChange(({ change, surfaces, origins, folded }) => heard.push({ change, surfaces, origins, folded }));
      const local = new Promise<void>((resolve) => b.onChange(() => resolve()));
      await Promise.all([
        b.append({ surface: 'skill', payload: { id: 's1' }, scope: 'personal' }),
        b.append({ surface: 'knowledge', payload: { id: 'k1' }, scope: 'personal' }),
        b.append({ surface: 'skill', payload: { id: 's2' }, scope: 'personal' }),
      ]);
      await local;
      await a.append({ surface: 'run', payload: { id: 'r1' }, scope: 'personal' });
      await a.pump();
      await b.pump();
      expect(heard).toEqual([
        { change: 1, surfaces: ['knowledge', 'skill'], origins: ['local'], folded: 3 },
        { change: 2, surfaces: ['run'], origins: ['remote'], folded: 1 },
      ]);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
