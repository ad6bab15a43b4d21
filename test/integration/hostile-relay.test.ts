import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { canonicalize } from '../../src/oplog/canonical.js';
import { FoldState } from '../../src/fold/fold-state.js';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { converged } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { coreCrypto } from '../helpers/test-device.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { usePostgres } from '../helpers/use-postgres.js';

const tempDir = useTempDirs();
const postgres = usePostgres();

type Head = { seq: number; op_id: string; hlc: { wall_ms: number; counter: number; device_id: string } };

/**
 * An attacker who can write to the relay and holds no key (proposals/threat-model.md). Each test
 * performs one attack against real daemons and asserts what a user cares about: no record lost,
 * no file outside the relay touched, no pump failing or hanging, the device keeping its identity.
 */
describe('a hostile relay folder', () => {
  it("cannot delete everyone's data with a forged checkpoint: compaction, restart and a new device keep every record", async () => {
    const relay = await tempDir();
    await survivesForgedCheckpoint(relay, async () => {
      // The heads are public in the segments; the empty state's hash is a constant.
      const header = forgedHeader(await relayHeads(relay));
      await writeFile(join(relay, 'checkpoints', `${header.checkpoint_hash}.jsonl`), JSON.stringify(header) + '\n');
    });
  });

  it('cannot make a daemon write outside the relay through symlinks at its push hints: the journal stays whole and the daemon starts again', async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const device = await withDaemon(dataDir, relay, async (client, daemon) => {
      await appendAndPump(client, 'first');
      return (await daemon.info())!.device_id;
    });
    // Planted while the daemon is down: its first push after a start writes a fresh hint.
    const journal = join(dataDir, 'journal.log');
    for (let seq = 0; seq < 8; seq++) {
      for (const name of [`push-${seq}`, `push-${seq}.again`]) {
        await rm(join(relay, 'devices', device, name), { force: true });
        await symlink(journal, join(relay, 'devices', device, name));
      }
    }
    await withDaemon(dataDir, relay, async (client) => {
      await appendAndPump(client, 'second');
      await appendAndPump(client, 'third');
    });
    await withDaemon(dataDir, relay, async (client) => expect(await client.call('sync.hash_state')).toMatchObject({ records: 3 }));
  });

  it("cannot redirect a device's segment, ack and damage writes outside the relay through a symlinked folder", async () => {
    const relay = await tempDir();
    const outside = await tempDir();
    await withDaemon(await tempDir(), relay, async (client, daemon) => {
      await appendAndPump(client, 'first');
      const ops = join(relay, 'devices', (await daemon.info())!.device_id, 'ops');
      await rm(ops, { recursive: true });
      await symlink(outside, ops);
      await client.call('sync.append', { surface: 'knowledge', payload: { id: 'second' } });
      // The push is refused by name (the folder is not a real one); nothing lands outside.
      await expect(client.call('sync.pump')).rejects.toMatchObject({ data: { code: 'relay_invalid' } });
      await client.call('sync.compact').catch(() => undefined);
      expect(await readdir(outside)).toEqual([]);
      expect(await client.call('sync.hash_state')).toMatchObject({ records: 2 });
    });
  });

  it('keeps syncing every other device past a directory, a dangling symlink and a FIFO at segment paths, and a device.json linked to /dev/zero', async () => {
    const relay = await tempDir();
    const [honest, victim] = await Promise.all([DaemonProcess.start(await tempDir(), relay), DaemonProcess.start(await tempDir(), relay)]);
    const [ch, cv] = await Promise.all([honest.connect(), victim.connect()]);
    try {
      await ch.call('sync.append', { surface: 'knowledge', payload: { id: 'honest' } });
      await ch.call('sync.pump');
      const planted = (name: string) => join(relay, 'devices', name);
      for (const name of ['dirseg', 'dangling', 'fifo', 'zero']) await mkdir(join(planted(name), 'ops'), { recursive: true });
      await mkdir(join(planted('dirseg'), 'ops', '000000000000.jsonl'));
      await symlink(join(relay, 'nowhere'), join(planted('dangling'), 'ops', '000000000000.jsonl'));
      execFileSync('mkfifo', [join(planted('fifo'), 'ops', '000000000000.jsonl')]);
      execFileSync('mkfifo', [join(planted('fifo'), 'device.json')]);
      await symlink('/dev/zero', join(planted('zero'), 'device.json'));
      await symlink('/dev/zero', join(planted('zero'), 'ack.json'));
      // A pump that hung on the FIFO would time out here; one that failed would reject.
      await cv.call('sync.pump');
      await cv.call('sync.checkpoint');
      expect(await cv.call('sync.records', { surface: 'knowledge' })).toMatchObject({
        records: [expect.objectContaining({ key: 'honest' })],
      });
      const status = await cv.call<{ counts: { ignored_relay_files: Record<string, number> } }>('sync.status');
      expect(Object.values(status.counts.ignored_relay_files).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(4);
    } finally {
      await Promise.all([ch.close(), cv.close()]);
      await Promise.all([honest.stop(), victim.stop()]);
    }
  });

  it('cannot lock a device out with an unsigned segment claiming a higher seq in its own folder', async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const device = await withDaemon(dataDir, relay, async (client, daemon) => {
      await appendAndPump(client, 'mine');
      return (await daemon.info())!.device_id;
    });
    // A well-formed record of this device at seq 1000, which no signature of its key covers.
    const ops = join(relay, 'devices', device, 'ops');
    const mine = JSON.parse((await readFile(join(ops, (await readdir(ops)).sort()[0]!), 'utf8')).trim().split('\n').at(-1)!) as Head &
      Record<string, unknown>;
    const header = JSON.stringify({ opsync_segment: 1, device_id: device, first_seq: 1000, count: 1 });
    await writeFile(join(ops, '000000001000.jsonl'), `${header}\n${JSON.stringify({ ...mine, seq: 1000 })}\n`);
    await withDaemon(dataDir, relay, async (client) => {
      expect(await client.call('sync.status')).toMatchObject({ device_id: device });
      await appendAndPump(client, 'still-mine');
      expect(await client.call('sync.hash_state')).toMatchObject({ records: 2 });
    });
  });

  it('keeps leases out of the relay: a hand-written lease file there grants nobody an epoch twice', async () => {
    const relay = await tempDir();
    const [one, two] = await Promise.all([DaemonProcess.start(await tempDir(), relay), DaemonProcess.start(await tempDir(), relay)]);
    const [c1, c2] = await Promise.all([one.connect(), two.connect()]);
    try {
      const first = await c1.call<{ epoch: number }>('lease.acquire', { agent_id: 'payroll-bot', ttl_ms: 60_000 });
      // What an attacker (or a sync tool delivering an old copy) writes into the relay folder.
      for (const dir of [join(relay, 'leases'), relay]) {
        await mkdir(dir, { recursive: true }).catch(() => undefined);
        for (const name of await readdir(dir))
          if (name !== 'devices' && name !== 'checkpoints' && name !== 'relay.json')
            await rm(join(dir, name), { recursive: true, force: true });
      }
      const second = await c2
        .call<{ epoch: number }>('lease.acquire', { agent_id: 'payroll-bot', ttl_ms: 60_000 })
        .catch((error: Error) => error);
      const fences = await Promise.all([
        c1.call<{ may_dispatch: boolean }>('sync.fence_check', { agent_id: 'payroll-bot', run_id: 'r1', epoch: first.epoch }),
        ...(second instanceof Error
          ? []
          : [c2.call<{ may_dispatch: boolean }>('sync.fence_check', { agent_id: 'payroll-bot', run_id: 'r1', epoch: second.epoch })]),
      ]);
      expect(fences.filter((f) => f.may_dispatch)).toHaveLength(1);
      expect(second).toBeInstanceOf(Error);
    } finally {
      await Promise.all([c1.close(), c2.close()]);
      await Promise.all([one.stop(), two.stop()]);
    }
  });
  it('refuses at start to keep leases in the relay folder or in a folder a sync tool manages, saying why', async () => {
    const relay = await tempDir();
    const synced = await tempDir();
    await mkdir(join(synced, '.stfolder'));
    for (const [leaseDir, why] of [
      [join(relay, 'leases'), /inside the relay folder/],
      [join(synced, 'leases'), /Syncthing syncs/],
    ] as const) {
      const started = await DaemonProcess.start(await tempDir(), relay, ['--lease-dir', leaseDir]).then(
        async (daemon) => (await daemon.stop(), null),
        (error: Error) => error,
      );
      expect(started?.message).toMatch(why);
    }
  });
});

describe('a hostile Postgres relay', () => {
  it("cannot delete everyone's data with a forged checkpoint row", async () => {
    const url = await postgres().createDatabase('forged_checkpoint');
    await survivesForgedCheckpoint(url, async () => {
      const { rows } = await pgQuery<{ device_id: string; record: string }>(
        url,
        'SELECT DISTINCT ON (device_id) device_id, record FROM opsync_ops ORDER BY device_id, seq DESC',
      );
      const header = forgedHeader(Object.fromEntries(rows.map((row) => [row.device_id, headOf(JSON.parse(row.record) as Head)])));
      await pgQuery(url, 'INSERT INTO opsync_checkpoints (checkpoint_hash, header, weight) VALUES ($1, $2, $3)', [
        header.checkpoint_hash,
        header,
        1_000_000,
      ]);
    });
  });

  it('reads no oversized row: a 64 MiB record planted for another device is refused as damage and sync goes on', async () => {
    const url = await postgres().createDatabase('oversized_row');
    const [one, two] = await Promise.all([DaemonProcess.start(await tempDir(), url), DaemonProcess.start(await tempDir(), url)]);
    const [c1, c2] = await Promise.all([one.connect(), two.connect()]);
    try {
      await pgQuery(
        url,
        `INSERT INTO opsync_devices (device_id, public_key, added_ms, last_seen_ms, acked, floor) VALUES ('mallory', 'AAAA', 0, 0, '{}', 0) ON CONFLICT DO NOTHING`,
      );
      await pgQuery(
        url,
        `INSERT INTO opsync_ops (device_id, seq, op_id, record) VALUES ('mallory', 0, 'x', repeat('x', 64 * 1024 * 1024))`,
      );
      await c1.call('sync.append', { surface: 'knowledge', payload: { id: 'honest' } });
      await c1.call('sync.pump');
      await c2.call('sync.pump');
      expect(await c2.call('sync.hash_state')).toMatchObject({ records: 1 });
      const status = await c2.call<{ counts: { ignored_relay_files: Record<string, number> } }>('sync.status');
      expect(status.counts.ignored_relay_files).toMatchObject({ record_oversized: 1 });
    } finally {
      await Promise.all([c1.close(), c2.close()]);
      await Promise.all([one.stop(), two.stop()]);
    }
  });
});

async function pgQuery<R extends pg.QueryResultRow>(url: string, statement: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query<R>(statement, params);
  } finally {
    await client.end();
  }
}

/** Runs `work` with a daemon on `dataDir` and `relay` and a client of it, then stops both. */
async function withDaemon<T>(dataDir: string, relay: string, work: (client: RpcClient, daemon: DaemonProcess) => Promise<T>): Promise<T> {
  const daemon = await DaemonProcess.start(dataDir, relay);
  const client = await daemon.connect();
  try {
    return await work(client, daemon);
  } finally {
    await client.close();
    await daemon.stop();
  }
}

async function appendAndPump(client: RpcClient, id: string): Promise<void> {
  await client.call('sync.append', { surface: 'knowledge', payload: { id } });
  await client.call('sync.pump');
}

/**
 * Two devices hold five records; `forge` plants a checkpoint of the empty state at their heads.
 * Both compact, restart, and a new device joins: every one of them must still hold the five.
 */
async function survivesForgedCheckpoint(relay: string, forge: () => Promise<void>): Promise<void> {
  const dataDirs = [await tempDir(), await tempDir()];
  let daemons = await Promise.all(dataDirs.map((dir) => DaemonProcess.start(dir, relay)));
  let clients = await Promise.all(daemons.map((daemon) => daemon.connect()));
  for (let i = 0; i < 5; i++) await clients[0]!.call('sync.append', { surface: 'knowledge', payload: { id: `k${i}` } });
  for (const client of clients) await client.call('sync.pump');
  expect((await converged(clients)).records).toBe(5);
  await forge();
  for (const client of clients) await client.call('sync.compact');
  await Promise.all(clients.map((client) => client.close()));
  await Promise.all(daemons.map((daemon) => daemon.stop()));
  daemons = await Promise.all([...dataDirs, await tempDir()].map((dir) => DaemonProcess.start(dir, relay)));
  clients = await Promise.all(daemons.map((daemon) => daemon.connect()));
  try {
    for (const client of clients) await client.call('sync.pump');
    expect((await converged(clients)).records).toBe(5);
    expect((await clients[2]!.call<{ records: unknown[] }>('sync.records', { surface: 'knowledge' })).records).toHaveLength(5);
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await Promise.all(daemons.map((daemon) => daemon.stop()));
  }
}

/** Each device's newest op in a relay folder, as its segments show it to anyone. */
async function relayHeads(relay: string): Promise<Record<string, Head>> {
  const heads: Record<string, Head> = {};
  for (const device of await readdir(join(relay, 'devices'))) {
    const ops = join(relay, 'devices', device, 'ops');
    const newest = (await readdir(ops)).sort().at(-1);
    if (!newest) continue;
    const lines = (await readFile(join(ops, newest), 'utf8')).trim().split('\n');
    heads[device] = headOf(JSON.parse(lines.at(-1)!) as Head);
  }
  return heads;
}

function headOf(op: Head): Head {
  return { seq: op.seq, op_id: op.op_id, hlc: op.hlc };
}

/** A version-1 checkpoint header of the empty state at `frontier`, hashed as the format says: it needs no key. */
function forgedHeader(frontier: Record<string, Head>): { checkpoint_hash: string } & Record<string, unknown> {
  const sorted = Object.fromEntries(Object.entries(frontier).sort(([x], [y]) => (x < y ? -1 : 1)));
  const body = { v: 1, frontier: sorted, scopes: [], state_hash: new FoldState(coreCrypto).stateHash(), chunks: [] };
  return { ...body, checkpoint_hash: `ck-${coreCrypto.sha256Hex(canonicalize(body))}` };
}
