import { cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RpcCallError } from '../../src/rpc/rpc-client.js';
import type { Session } from '../../src/session/session.js';
import { converged } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { openDirSession } from '../helpers/dir-world.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * The relay folder is outside the daemon's control: a user deletes it, a share is unmounted, a
 * peer re-creates it empty. Appends must keep their durability, pumps must say what happened,
 * and once a relay is there again, every op reaches every device (proposals/relay.md
 * §A relay folder that vanishes).
 */
describe('a relay folder that vanishes under running devices', () => {
  async function append(session: Session, ids: readonly string[]): Promise<void> {
    for (const id of ids) await session.append({ surface: 'knowledge', payload: { id }, scope: 'personal' });
  }

  function keys(session: Session): string[] {
    return session.state.page('knowledge', null, 1000).items.map((record) => record.key);
  }

  it('keeps appends durable while it is gone, says so on every pump, and refills a re-created relay from the journals', async () => {
    const relay = await tempDir();
    const laptop = await openDirSession(relay, await tempDir(), 'laptop');
    const desktop = await openDirSession(relay, await tempDir(), 'desktop');
    await append(laptop, ['l0', 'l1', 'l2']);
    await append(desktop, ['d0', 'd1']);
    await laptop.pump();
    await desktop.pump();
    await laptop.pump();

    await rm(relay, { recursive: true, force: true });
    await append(laptop, ['l3', 'l4']);
    await expect(laptop.pump()).rejects.toMatchObject({
      code: 'relay_unavailable',
      message: expect.stringContaining('is gone') as unknown,
    });
    await expect(desktop.pump()).rejects.toMatchObject({
      code: 'relay_unavailable',
      message: expect.stringContaining('is gone') as unknown,
    });
    expect(laptop.status().last_error).toContain('is gone');
    expect(laptop.status().counts.unpushed).toBe(2);

    // A third device starting on the same path creates a new, empty relay there.
    const phone = await openDirSession(relay, await tempDir(), 'phone');
    await append(phone, ['p0']);
    expect((await laptop.pump()).pushed).toBe(5);
    expect((await desktop.pump()).pushed).toBe(2);
    await phone.pump();
    await laptop.pump();
    await desktop.pump();
    const everything = ['d0', 'd1', 'l0', 'l1', 'l2', 'l3', 'l4', 'p0'];
    for (const device of [laptop, desktop, phone]) expect(keys(device)).toEqual(everything);
    expect(new Set([laptop, desktop, phone].map((device) => device.state.stateHash())).size).toBe(1);
    await Promise.all([laptop.close(), desktop.close(), phone.close()]);
  });

  it('is refilled when restored from an older backup, by a device that writes nothing more', async () => {
    const relay = await tempDir();
    const backup = join(await tempDir(), 'relay-backup');
    // relayCheckMs 0: every pump checks what the relay still holds (by default, every ten seconds).
    const laptop = await openDirSession(relay, await tempDir(), 'laptop', { relayCheckMs: 0 });
    await append(laptop, ['l0', 'l1']);
    await laptop.pump();
    await cp(relay, backup, { recursive: true });
    await append(laptop, ['l2', 'l3']);
    await laptop.pump();

    // The folder is restored from the backup: the same relay, without the laptop's last ops.
    await rm(relay, { recursive: true, force: true });
    await cp(backup, relay, { recursive: true });
    const phone = await openDirSession(relay, await tempDir(), 'phone');
    await phone.pump();
    expect(keys(phone)).toEqual(['l0', 'l1']);
    expect(await laptop.pump()).toMatchObject({ pushed: 2 });
    await phone.pump();
    expect(keys(phone)).toEqual(['l0', 'l1', 'l2', 'l3']);
    await Promise.all([laptop.close(), phone.close()]);
  });

  it('is noticed when it was replaced between two pumps: the device reads the new relay, not what it remembers of the old one', async () => {
    const relay = await tempDir();
    const writer = await openDirSession(relay, await tempDir(), 'writer');
    const reader = await openDirSession(relay, await tempDir(), 'reader');
    await append(writer, ['w0', 'w1', 'w2', 'w3']);
    await append(reader, ['r0']);
    await writer.pump();
    await reader.pump();
    expect(keys(reader)).toEqual(['r0', 'w0', 'w1', 'w2', 'w3']);

    // Replaced while neither device was looking: the writer, restarted on a new relay, pushes
    // its chain again and goes on writing.
    await writer.close();
    await rm(relay, { recursive: true, force: true });
    const restarted = await openDirSession(relay, await tempDir(), 'writer-2');
    await append(restarted, ['x0']);
    await restarted.pump();
    await append(reader, ['r1']);
    await reader.pump();
    await restarted.pump();
    expect(keys(reader)).toEqual(['r0', 'r1', 'w0', 'w1', 'w2', 'w3', 'x0']);
    expect(keys(restarted)).toEqual(['r0', 'r1', 'x0']);
    expect(
      reader
        .status()
        .roster.map((entry) => entry.device_id)
        .sort(),
    ).toEqual(['reader', 'writer-2']);
    await Promise.all([reader.close(), restarted.close()]);
  });

  it('refills a re-created relay after compacting: its base checkpoint goes back, its ops restart above it, a new device gets all', async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const device = await openDirSession(relay, dataDir, 'laptop');
    await append(device, ['k0', 'k1', 'k2']);
    await device.pump();
    const published = await device.checkpoint();
    expect(await device.compact()).toMatchObject({ compacted: true });
    await device.settled();
    await append(device, ['k3']);

    await rm(relay, { recursive: true, force: true });
    const phone = await openDirSession(relay, await tempDir(), 'phone');
    await device.pump();
    expect(device.status().counts.unpushed).toBe(0);
    const tablet = await openDirSession(relay, await tempDir(), 'tablet');
    expect(tablet.status().base_checkpoint).toBe(published.checkpoint_hash);
    await tablet.pump();
    await phone.pump();
    for (const other of [tablet, phone]) expect(keys(other)).toEqual(['k0', 'k1', 'k2', 'k3']);
    expect(phone.state.stateHash()).toBe(device.state.stateHash());

    // Without its copy of the base checkpoint, a device can only say why it cannot refill.
    await rm(relay, { recursive: true, force: true });
    await rm(join(dataDir, 'checkpoints'), { recursive: true, force: true });
    const fresh = await openDirSession(relay, await tempDir(), 'fresh');
    await append(device, ['k4']);
    const refusal = await device.pump().catch((error: unknown) => error);
    expect(refusal).toMatchObject({ code: 'relay_gap', message: expect.stringContaining(published.checkpoint_hash!) as unknown });
    // Nothing is lost: the ops that could not be pushed stay queued, and the state is whole.
    expect(device.status().counts.unpushed).toBeGreaterThan(0);
    expect(keys(device)).toEqual(['k0', 'k1', 'k2', 'k3', 'k4']);
    await Promise.all([device.close(), fresh.close(), phone.close(), tablet.close()]);
  });
});

describe('a daemon whose relay folder is deleted', () => {
  it('answers appends, names the failure over RPC, logs it once, and converges once a peer re-creates the relay', async () => {
    const relay = await tempDir();
    const [first, second] = await Promise.all([DaemonProcess.start(await tempDir(), relay), DaemonProcess.start(await tempDir(), relay)]);
    const [a, b] = await Promise.all([first.connect(), second.connect()]);
    let third: DaemonProcess | undefined;
    try {
      await a.call('sync.append', { surface: 'knowledge', payload: { id: 'before' } });
      await converged([a, b]);

      // The daemons write into the folder meanwhile (acks): a write between the removal of a
      // folder's files and of the folder itself is retried over, as a user's second try would.
      await rm(relay, { recursive: true, force: true, maxRetries: 20 });
      for (let i = 0; i < 40; i++) await a.call('sync.append', { surface: 'knowledge', payload: { id: `while-gone-${i}` } });
      const failure = await a.call('sync.pump').catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(RpcCallError);
      expect(failure).toMatchObject({
        code: -32027,
        data: { code: 'relay_unavailable' },
        message: expect.stringContaining('is gone') as unknown,
      });
      // Forty appends each asked for a push; the log says it once, not forty times.
      const warnings = first
        .logs()
        .split('\n')
        .filter((line) => line.includes('background pump failed'));
      expect(warnings.length).toBeLessThanOrEqual(2);
      // An expected failure is logged by its code and sentence, not with a stack.
      const logged = JSON.parse(warnings[0]!) as { err: Record<string, unknown> };
      expect(logged.err).toMatchObject({ code: 'relay_unavailable', message: expect.stringContaining('is gone') as unknown });
      expect(logged.err).not.toHaveProperty('stack');

      third = await DaemonProcess.start(await tempDir(), relay);
      const c = await third.connect();
      await a.call('sync.pump');
      await b.call('sync.pump');
      const final = await converged([a, b, c]);
      expect(final.records).toBe(41);
      await c.close();
    } finally {
      await Promise.all([a.close(), b.close()]);
      await Promise.all([first.stop(), second.stop(), third?.stop()]);
    }
  });
});
