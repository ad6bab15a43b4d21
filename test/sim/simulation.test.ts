import { describe, expect, it } from 'vitest';
import { assembleCheckpoint } from '../../src/checkpoint/checkpoint.js';
import { FoldState } from '../../src/fold/fold-state.js';
import type { FoldOp } from '../../src/fold/fold-op.js';
import { canonicalize } from '../../src/oplog/canonical.js';
import { isOpsyncError } from '../../src/util/opsync-error.js';
import type { Surface } from '../../src/oplog/surface.js';
import type { Session } from '../../src/session/session.js';
import type { CheckpointFile, CheckpointHeaderJson } from '../../relay/port/relay.js';
import type { JsonObject } from '../../src/util/json.js';
import { scaled, scaledTimeout, seededRandom, testSeed } from '../helpers/seeded.js';
import { coreCrypto } from '../helpers/test-device.js';
import { DirRelayWorld } from '../helpers/dir-world.js';
import { PgRelayWorld } from '../helpers/pg-world.js';
import { usePostgres } from '../helpers/use-postgres.js';
import { PERSONAL_KEY, World } from '../helpers/world.js';
import { Network } from './faulty-relay.js';

/**
 * Seeded simulation (proposals/session.md, proposals/fold.md): 3 to 5 devices sync through a relay behind a
 * network that drops, loses, delays, duplicates and reorders, partitions devices, while devices
 * crash (keeping only their journal) and restart, join late, clocks are set back, the relay is
 * restored from older backups, devices lack the key until they import it, and checkpoints,
 * compaction, rebases and GC happen along the way. At quiescence every device must hold exactly
 * the state of a reference fold of every op any device appended. The relay is in memory, a real
 * relay folder (backed up and restored as folder copies) or a real Postgres database (backed up
 * as one snapshot of its tables). OPSYNC_SEED replays one schedule
 * (with -t naming the test); OPSYNC_LONG=<n> runs n times more.
 */
const SCHEDULES = scaled(200);
/** Schedules on a relay folder: each costs real writes and fdatasyncs. */
const FOLDER_SCHEDULES = scaled(20);
/** Schedules on a Postgres relay: each has a database of its own. */
const POSTGRES_SCHEDULES = scaled(20);
const STEPS = 60;
const HORIZON_MS = 5 * 60_000;
/** Errors a device may meet under faults; anything else is a bug. */
const EXPECTED = new Set(['relay_unavailable']);

describe('seeded simulation', () => {
  it(
    `converges after ${SCHEDULES} seeded schedules of faults, crashes, checkpoints and GC`,
    async () => {
      await runSchedules(SCHEDULES, 'in memory', inMemory);
    },
    scaledTimeout(),
  );

  it(
    `converges after ${FOLDER_SCHEDULES} seeded schedules on a real relay folder, each device stamping it with its own clock`,
    async () => {
      await runSchedules(FOLDER_SCHEDULES, 'folder', () => DirRelayWorld.create(HORIZON_MS));
    },
    scaledTimeout(),
  );

  // Schedules that once found a bug, replayed on every run: each fails on the code before its fix
  // (a change to how schedules are drawn turns them into ordinary random schedules).
  it.each([
    [1131917442, 'a chain restart on the latest checkpoint pushed queued ops that checkpoint covers'],
    [1843023721, 'the same, on another schedule'],
    [805646883, 'a pump that rebased met a floor another device moved by restarting its chain, and could not rebase again'],
    [1738716845, 'a chain restarted above a base the relay held, lighter than the latest, which did not cover it'],
    [654764040, 'a start whose base was gone everywhere, with the relay out of reach, failed as though nothing could stand in for it'],
    [
      72134455,
      'two devices restarted their chains at once, each putting back a checkpoint without the other, and a device behind both could not rebase past them',
    ],
    [
      594051701,
      "a chain restart anchored on a base whose publisher the roster read last did not show, which the relay's check then refused",
    ],
    [
      3244238,
      'a device behind a restarted chain waited for the publisher of the only checkpoint covering it to register again, and failed instead',
    ],
    [
      1290822508,
      'a chain restart put its base back from its copy, published by a device the relay no longer had registered, and the relay refused the anchor',
    ],
    [
      473044527,
      "two devices that had published the same state each put their own copy of it back at once; the relay kept the other device's, and refused the anchor of the one that trusted only its own",
    ],
  ])('replays schedule %i (%s)', async (seed) => {
    await runSchedule(seed);
  });
});

describe('seeded simulation on a Postgres relay', () => {
  const postgres = usePostgres();

  it(
    `converges after ${POSTGRES_SCHEDULES} seeded schedules on a real Postgres relay`,
    async () => {
      await runSchedules(POSTGRES_SCHEDULES, 'on Postgres', () => PgRelayWorld.create(postgres(), HORIZON_MS));
    },
    scaledTimeout(),
  );
});

/** Runs `count` schedules from a fresh seed, or the one OPSYNC_SEED names, each on a world of its own. */
async function runSchedules(count: number, relay: string, makeWorld: () => Promise<World>): Promise<void> {
  const first = testSeed();
  for (let n = 0; n < count; n++) {
    const seed = (first + n) >>> 0;
    try {
      await runSchedule(seed, makeWorld);
    } catch (error) {
      throw new Error(`simulation on a relay ${relay} failed; replay with OPSYNC_SEED=${seed}: ${(error as Error).stack ?? String(error)}`);
    }
    if (process.env.OPSYNC_SEED) break;
  }
}

const inMemory = (): Promise<World> => Promise.resolve(new World(HORIZON_MS));

async function runSchedule(seed: number, makeWorld = inMemory): Promise<void> {
  const world = await makeWorld();
  try {
    await simulate(seed, world);
  } finally {
    await world.dispose();
  }
}

/** A checkpoint of the empty state at `heads`, as anyone can write one: version 1, or version 2 with a MAC and signature made up. */
function forgedCheckpoint(heads: ReadonlyMap<string, unknown>, v2: boolean): CheckpointFile {
  const frontier = Object.fromEntries([...heads].sort(([a], [b]) => (a < b ? -1 : 1)));
  const body = { v: v2 ? 2 : 1, frontier, scopes: [], state_hash: new FoldState(coreCrypto).stateHash(), chunks: [] };
  const auth = v2 ? { publisher: [...heads.keys()][0]!, kid: 'k-0000000000000000', mac: '0'.repeat(64), sig: 'A'.repeat(86) } : {};
  return {
    header: { ...body, checkpoint_hash: `ck-${coreCrypto.sha256Hex(canonicalize(body))}`, ...auth } as unknown as CheckpointHeaderJson,
    chunks: [],
  };
}

async function simulate(seed: number, world: World): Promise<void> {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const net = new Network(random);
  const names = ['device-a', 'device-b', 'device-c', 'device-d', 'device-e'].slice(0, 3 + Math.floor(random() * 3));
  const live = new Map<string, Session>();
  const appended: FoldOp[] = [];
  let restoreBackup = await world.snapshotRelay();
  const log: string[] = [];

  // Some devices start without the personal key: they hold everyone's ops until it is imported.
  const keyless = new Set(names.filter(() => random() < 0.15));
  const attempt = async <T>(name: string, what: string, work: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await work();
    } catch (error) {
      // A device without the key cannot adopt a checkpoint sealed with it: it says so, by name.
      if (isOpsyncError(error) && (EXPECTED.has(error.code) || (error.code === 'key_missing' && keyless.has(name)))) return undefined;
      // A pump that must wait for a checkpoint's publisher to register again (a relay restored from
      // an older copy) says so by name; quiescence still requires every device to converge.
      if (isOpsyncError(error) && (error.data as { waiting_for_publisher?: boolean } | undefined)?.waiting_for_publisher) return undefined;
      throw new Error(`${what} ${name}: ${(error as Error).message}\nlast steps:\n${log.slice(-60).join('\n')}`, { cause: error });
    }
  };
  const start = async (name: string) => {
    const session = await attempt(name, 'open', () =>
      world.open(name, { relay: (relay) => net.wrap(relay), ...(keyless.has(name) ? { keys: [] } : {}) }),
    );
    if (session) live.set(name, session);
  };
  const importKey = async (name: string) => {
    log.push(`import key on ${name}`);
    if ((await attempt(name, 'import key on', () => live.get(name)!.importKey(PERSONAL_KEY))) !== undefined) keyless.delete(name);
  };

  // Some devices join later, at a "restart" step: a new device bootstraps mid-schedule.
  const late = new Set(names.slice(1).filter(() => random() < 0.2));
  for (const name of names) {
    // Most clocks are a little off; some are far enough ahead that their ops sit in quarantine for a while.
    const skew = random() < 0.1 ? 61_000 + Math.floor(random() * 60_000) : random() < 0.3 ? Math.floor(random() * 40_000) - 20_000 : 0;
    world.skew.set(name as never, skew);
    if (!late.has(name)) await start(name);
  }
  // A hostile writer to the relay, holding no key, draws from a generator of its own (so that the
  // named seeds below replay their schedules): now and then it plants a checkpoint of the empty
  // state at the devices' current heads, as version 1 (no proof) or with a made-up MAC.
  const hostile = seededRandom(seed ^ 0x5eed);
  const heads = new Map<string, { seq: number; op_id: string; hlc: unknown }>();
  for (let step = 0; step < STEPS; step++) {
    if (hostile() < 0.05 && heads.size > 0) {
      await world.plantCheckpoint(forgedCheckpoint(heads, hostile() < 0.5));
      log.push(`${step} a forged checkpoint planted on the relay`);
    }
    const roll = random();
    const running = [...live.keys()];
    if (roll < 0.35 && running.length > 0) {
      const name = pick(running);
      const [surface, payload] = randomOp(random);
      if (keyless.has(name)) continue;
      const result = await attempt(name, 'append on', () => live.get(name)!.append({ surface, payload, scope: 'personal' }));
      if (result)
        appended.push({ op_id: result.op_id, device_id: live.get(name)!.device, hlc: result.hlc, scope: 'personal', surface, payload });
      if (result) heads.set(live.get(name)!.device, { seq: result.seq, op_id: result.op_id, hlc: result.hlc });
      log.push(`${step} append ${name} ${surface} → ${result ? `seq ${result.seq}` : 'failed'}`);
    } else if (roll < 0.6 && running.length > 0) {
      const chosen = running.filter(() => random() < 0.5);
      const reports = await Promise.all(chosen.map((name) => attempt(name, 'pump', () => live.get(name)!.pump())));
      log.push(
        `${step} pump ${chosen.map((name, i) => `${name}${reports[i] ? (reports[i].rebased ? ' (rebased)' : '') : ' (failed)'}`).join(',')}`,
      );
    } else if (roll < 0.67 && running.length > 1) {
      const name = pick(running);
      world.crash(name);
      live.delete(name);
      log.push(`${step} crash ${name}`);
    } else if (roll < 0.75) {
      const down = names.filter((name) => !live.has(name));
      if (down.length > 0) {
        const name = pick(down);
        log.push(`${step} restart ${name}`);
        await start(name);
      }
    } else if (roll < 0.81) {
      const name = pick(names);
      if (net.partitioned.has(name as never)) net.partitioned.delete(name as never);
      else net.partitioned.add(name as never);
      log.push(`${step} toggle partition ${name}`);
    } else if (roll < 0.82) {
      // The relay is backed up now and then, and restored from its backup (older, or empty).
      if (random() < 0.6) {
        restoreBackup = await world.snapshotRelay();
        log.push(`${step} relay backed up`);
      } else {
        await restoreBackup();
        log.push(`${step} relay restored from a backup`);
      }
    } else if (roll < 0.845 && running.length > 0) {
      const name = pick(running);
      const rebased = await attempt(name, 'rebase', () => live.get(name)!.rebase());
      log.push(`${step} rebase ${name} → ${rebased?.rebased ? rebased.base_checkpoint?.slice(0, 11) : (rebased?.reason ?? 'failed')}`);
    } else if (roll < 0.88 && running.length > 0) {
      const name = pick(running);
      // Often after a calm spell — devices back up, the network whole — in which every device
      // pumped, so that checkpoints (and the compactions, rebases and merges behind them) are
      // common rather than rare: without it, one checkpoint in eight attempts was published.
      const calm = random() < 0.6;
      log.push(`${step} ${calm ? 'calm, then ' : ''}checkpoint+compact ${name}`);
      if (calm) {
        const [faults, partitioned] = [net.faults, [...net.partitioned]];
        net.calm();
        for (const down of names.filter((other) => !live.has(other) && !late.has(other))) await start(down);
        for (let round = 0; round < 2; round++)
          await Promise.all([...live.keys()].map((other) => attempt(other, 'pump', () => live.get(other)!.pump())));
        net.faults = faults;
        for (const device of partitioned) net.partitioned.add(device);
      }
      const session = live.get(name)!;
      const published = await attempt(name, 'checkpoint', () => session.checkpoint());
      const compacted = published ? await attempt(name, 'compact', () => session.compact()) : undefined;
      log.push(
        `  → ${published?.checkpoint_hash?.slice(0, 11) ?? published?.reason ?? 'failed'}; ${compacted?.compacted ? `compacted onto ${compacted.base_checkpoint?.slice(0, 11)}` : (compacted?.reason ?? '-')}`,
      );
    } else if (roll < 0.93) {
      world.now += Math.floor(random() * 120_000);
      log.push(`${step} time ${world.now}`);
    } else if (roll < 0.95) {
      // A device's clock is set back (NTP, a user): its stamps must still only go forward.
      const name = pick(names);
      world.skew.set(name as never, (world.skew.get(name as never) ?? 0) - Math.floor(random() * 300_000));
      log.push(`${step} clock of ${name} set back to skew ${world.skew.get(name as never)}`);
    } else if (roll < 0.965) {
      const waiting = [...keyless].filter((name) => live.has(name));
      if (waiting.length > 0) await importKey(pick(waiting));
    } else {
      net.faults = {
        drop: random() * 0.3,
        lostResponse: random() * 0.3,
        delay: random() * 0.6,
        duplicate: random() * 0.4,
        reorder: random(),
      };
      log.push(`${step} faults ${JSON.stringify(net.faults)}`);
    }
  }

  // Quiescence: heal the network, set clocks that were set back right, restart everyone, let
  // clocks pass any skew, pump until still.
  net.calm();
  for (const name of names) world.skew.set(name as never, Math.max(0, world.skew.get(name as never) ?? 0));
  world.now += 10 * 60_000;
  for (const name of names) if (!live.has(name)) await start(name);
  for (const name of keyless) await importKey(name);
  const sessions = names.map((name) => live.get(name)!);
  for (let round = 0; round < 4; round++) {
    for (const session of sessions) await attempt(session.device, 'final pump', () => session.pump());
  }

  const reference = new FoldState(coreCrypto);
  for (const op of appended) reference.apply(op);
  const expected = assembleCheckpoint(reference, new Map(), coreCrypto).chunks;
  for (const session of sessions) {
    expect(session.status().counts, `${session.device} after quiescence`).toMatchObject({ quarantined: 0, undecryptable: 0, rejected: {} });
    if (session.state.stateHash() !== reference.stateHash()) {
      // What differs, and how the devices got there: a schedule that does not replay (on a real
      // relay, concurrent pumps interleave by timing) is read from this message alone.
      const [mine, all] = [recordLines(session.state), recordLines(reference)];
      const differs = (from: Set<string>, other: Set<string>) => [...from].filter((line) => !other.has(line)).slice(0, 8);
      const frontiers = sessions.map(
        (other) => `${other.device}: ${JSON.stringify(other.status().journal_frontier)} base ${other.status().base_checkpoint ?? '-'}`,
      );
      throw new Error(
        `${session.device} state hash differs from the reference fold\nmissing: ${differs(all, mine).join(' | ')}\nextra: ${differs(mine, all).join(' | ')}\n${frontiers.join('\n')}\nlast steps:\n${log.slice(-60).join('\n')}`,
      );
    }
    expect(assembleCheckpoint(session.state, new Map(), coreCrypto).chunks, `${session.device} records`).toEqual(expected);
  }
  for (const session of sessions) await session.close();
}

/** Every record of the surfaces the schedules write, one line each. */
function recordLines(state: FoldState): Set<string> {
  const lines = new Set<string>();
  for (const surface of ['knowledge', 'declagent', 'registry:tools', 'conversation', 'intent', 'routing'] as Surface[]) {
    for (const record of state.page(surface, null, 100_000).items) lines.add(`${surface} ${record.key} ${canonicalize(record)}`);
  }
  return lines;
}

function randomOp(random: () => number): [Surface, JsonObject] {
  const key = `k${Math.floor(random() * 4)}`;
  const value = Math.floor(random() * 100);
  switch (Math.floor(random() * 6)) {
    case 0:
      return ['knowledge', { id: key, v: value }];
    case 1:
      return ['declagent', { id: key, v: value }];
    case 2:
      return ['registry:tools', random() < 0.2 ? { id: key, deleted: true } : { id: key, v: value }];
    case 3:
      return ['conversation', { conversation_id: `c${value % 2}`, role: 'user', content: `m${value}`, timestamp: value }];
    case 4:
      return [
        'intent',
        { id: `run-${key}`, agent_id: 'agent-1', epoch: value % 4, status: (['pending', 'committed', 'failed'] as const)[value % 3]! },
      ];
    default:
      return ['routing', { route: value }];
  }
}
