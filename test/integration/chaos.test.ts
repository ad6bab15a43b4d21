import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { cp, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { converged } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { backupStatements, RELAY_TABLES, restoreStatements, transaction } from '../helpers/pg-world.js';
import { scaled, scaledTimeout, seededRandom, testSeed } from '../helpers/seeded.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { usePostgres } from '../helpers/use-postgres.js';

const tempDir = useTempDirs();

type Random = () => number;

/**
 * Three daemon processes on one relay, driven by a seeded schedule of what befalls devices in
 * use: bursts of pipelined appends, kill -9 in the middle of a burst or of a compaction,
 * checkpoints, compactions, pumps, and a fault of the relay itself (`fault`, which says what it
 * did). Afterwards every device holds the same state, and every append that was answered is in it.
 */
async function chaos(
  relay: string,
  fault: (random: Random) => Promise<string | null>,
  heal: () => Promise<void> = async () => {},
): Promise<void> {
  const seed = testSeed();
  const random = seededRandom(seed);
  const pick = (n: number) => Math.floor(random() * n);
  const dataDirs = [await tempDir(), await tempDir(), await tempDir()];
  const daemons = await Promise.all(dataDirs.map((dir) => DaemonProcess.start(dir, relay)));
  const clients: RpcClient[] = await Promise.all(daemons.map((daemon) => daemon.connect()));
  const answered = new Set<string>();
  const events: string[] = [`seed ${seed}`];
  /** Each device's logs from the daemons killed so far, kept for a failure. */
  const earlierLogs = ['', '', ''];
  let next = 0;

  async function restart(i: number): Promise<void> {
    await daemons[i]!.kill9();
    earlierLogs[i] += daemons[i]!.logs();
    await clients[i]!.close();
    daemons[i] = await DaemonProcess.start(dataDirs[i]!, relay);
    clients[i] = await daemons[i].connect();
  }

  try {
    for (let round = 0; round < scaled(30); round++) {
      const i = pick(3);
      const action = random();
      if (action < 0.55) {
        const calls = Array.from({ length: 1 + pick(200) }, () => {
          const id = `d${i}-${next++}`;
          return clients[i]!.call('sync.append', { surface: 'knowledge', payload: { id, text: 'x'.repeat(pick(2000)) } }).then(
            () => answered.add(id),
            () => {},
          );
        });
        if (random() < 0.3) {
          await restart(i);
          events.push(`kill -9 of ${i} during a burst`);
        }
        await Promise.all(calls);
      } else if (action < 0.7) {
        // A relay out of reach fails a checkpoint by name; what counts is where the devices end up.
        events.push(
          `checkpoint on ${i}: ${JSON.stringify(await clients[i]!.call('sync.checkpoint').catch((error: unknown) => (error as Error).message))}`,
        );
      } else if (action < 0.85) {
        const compact = clients[i]!.call('sync.compact').catch((error: unknown) => error);
        if (random() < 0.4) {
          await restart(i);
          events.push(`kill -9 of ${i} during a compaction`);
        }
        events.push(`compact on ${i}: ${JSON.stringify(await compact)}`);
      } else if (action < 0.93) {
        // A pump may fail while damage is being restored; what counts is where the devices end up.
        await clients[i]!.call('sync.pump').catch((error: unknown) => events.push(`pump on ${i} failed: ${(error as Error).message}`));
      } else {
        const what = await fault(random);
        if (what) events.push(what);
      }
    }
    await heal();
    // Live sync would get there too; two rounds of pumps make it quick.
    for (let pass = 0; pass < 2; pass++) {
      for (const [i, client] of clients.entries())
        await client.call('sync.pump').catch((error: unknown) => events.push(`final pump on ${i} failed: ${(error as Error).message}`));
    }
    const final = await converged(clients).catch(async (error: unknown) => {
      // What each device says about itself, for whoever reads the failure.
      const statuses = await Promise.all(
        clients.map((client) =>
          client
            .call<{ last_error: string | null; base_checkpoint: string | null; journal_frontier: unknown; counts: unknown }>('sync.status')
            .then(
              ({ last_error, base_checkpoint, journal_frontier, counts }) =>
                JSON.stringify({ last_error, base_checkpoint, journal_frontier, counts }),
              (failure: unknown) => (failure as Error).message,
            ),
        ),
      );
      throw new Error(`${(error as Error).message}\n${events.join('\n')}\n${statuses.join('\n')}`);
    });
    const keys = new Set<string>();
    for (let after: string | null = null; ;) {
      const page: { records: Array<{ key: string }>; next: string | null } = await clients[0]!.call('sync.records', {
        surface: 'knowledge',
        limit: 1000,
        ...(after ? { after } : {}),
      });
      for (const record of page.records) keys.add(record.key);
      if (!page.next) break;
      after = page.next;
    }
    expect(
      [...answered].filter((id) => !keys.has(id)),
      `seed ${seed}`,
    ).toEqual([]);
    expect(final.records).toBe(keys.size);
  } catch (error) {
    // Every daemon's log, killed ones' too, kept for whoever reads the failure.
    const kept = await Promise.all(
      daemons.map(async (daemon, i) => {
        const path = join(tmpdir(), `opsync-chaos-${seed}-device${i}-${(await daemon.info())?.device_id ?? 'stopped'}.log`);
        await writeFile(path, earlierLogs[i]! + daemon.logs());
        return path;
      }),
    );
    // And a relay folder as it was, with the devices' data directories (their journals).
    const copy = join(tmpdir(), `opsync-chaos-${seed}-folders`);
    if (!relay.startsWith('postgres')) await cp(relay, join(copy, 'relay'), { recursive: true }).catch(() => {});
    for (const [i, dir] of dataDirs.entries()) await cp(dir, join(copy, `device${i}`), { recursive: true }).catch(() => {});
    throw new Error(`${(error as Error).message}\nthe daemons' logs: ${kept.join(' ')}; their folders: ${copy}`, { cause: error });
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await Promise.all(daemons.map((daemon) => daemon.stop()));
  }
}

describe('three daemons under crashes, compactions and relay damage', () => {
  it(
    'converge on a relay directory whose segment files get cut, flipped and deleted, that is replaced by an empty one or restored from an older backup, and keep every answered append',
    async () => {
      const relay = await tempDir();
      let backup: string | null = null;
      await chaos(relay, async (random) => {
        const pick = (n: number) => Math.floor(random() * n);
        const roll = random();
        if (roll < 0.1) {
          // Backed up while the daemons write, as a backup tool would: files that vanish mid-copy are missed.
          const copy = join(await tempDir(), 'backup');
          await cp(relay, copy, { recursive: true, force: true }).catch(() => {});
          backup = copy;
          return 'the relay folder was backed up';
        }
        if (roll < 0.2 && backup) {
          // Restored from that backup: the old folder moved away in one rename, the copy put back in its place.
          await rename(relay, join(await tempDir(), 'old-relay'));
          await cp(backup, relay, { recursive: true, force: true });
          return 'the relay folder was restored from an older backup';
        }
        if (roll < 0.3) {
          // Restored from an empty backup: a new relay (a new id) with no device, op or checkpoint.
          // The old folder is moved away in one rename, as the daemons may be writing into it.
          await rename(relay, join(await tempDir(), 'old-relay'));
          await Promise.all(['devices', 'checkpoints'].map((folder) => mkdir(join(relay, folder), { recursive: true })));
          await writeFile(join(relay, 'relay.json'), JSON.stringify({ opsync_relay: 1, relay_id: randomUUID() }) + '\n');
          return 'the relay folder was replaced by an empty one';
        }
        const devices = await readdir(join(relay, 'devices'));
        if (devices.length === 0) return null;
        const ops = join(relay, 'devices', devices[pick(devices.length)]!, 'ops');
        const segments = existsSync(ops) ? (await readdir(ops)).filter((name) => name.endsWith('.jsonl')) : [];
        if (segments.length === 0) return null;
        const path = join(ops, segments[pick(segments.length)]!);
        const bytes = await readFile(path);
        const kind = pick(3);
        if (kind === 0) await writeFile(path, bytes.subarray(0, pick(bytes.length)));
        if (kind === 1) {
          const at = pick(bytes.length);
          bytes[at] = bytes[at]! ^ (1 + pick(255));
          await writeFile(path, bytes);
        }
        if (kind === 2) await rm(path);
        return `damaged ${['cut', 'flip', 'rm'][kind]} ${path.slice(relay.length)}`;
      });
    },
    scaledTimeout(),
  );
});

describe('three daemons on a Postgres relay under crashes of daemons and of the database, and a database emptied or restored from an older backup', () => {
  const postgres = usePostgres();

  it(
    'converge, and keep every answered append',
    async () => {
      // The relay's faults: the database crashes (immediate stop) and stays down for a while
      // (appends, compactions and daemon restarts go on meanwhile), then comes back; it loses every
      // row, as if restored from an empty backup, and the devices refill it; or it is backed up
      // (one snapshot, as pg_dump takes) and later restored from that backup.
      let down = false;
      let backedUp = false;
      const up = async () => {
        if (down) await postgres().resume();
        down = false;
      };
      await chaos(
        postgres().url,
        async (random) => {
          if (down) {
            await up();
            return 'the database is back';
          }
          const roll = random();
          if (roll < 0.2) {
            await transaction(postgres().url, backupStatements('backup'), 'REPEATABLE READ');
            backedUp = true;
            return 'the database was backed up';
          }
          if (roll < 0.4 && backedUp) {
            await transaction(postgres().url, restoreStatements('backup'));
            return 'the database was restored from an older backup';
          }
          if (roll < 0.6) {
            // Restored from an empty backup: every device, op and checkpoint is gone.
            await transaction(postgres().url, [`TRUNCATE ${RELAY_TABLES.join(', ')}`]);
            return 'the database lost every row';
          }
          await postgres().pause();
          down = true;
          return 'the database crashed';
        },
        up,
      );
    },
    scaledTimeout(),
  );
});
