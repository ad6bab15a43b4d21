import { copyFile, cp, readdir, readFile, rm, truncate, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_SEGMENT_BYTES } from '../../relay/directory/segment-codec.js';
import type { Session } from '../../src/session/session.js';
import { converged } from '../helpers/converged.js';
import { applyDamage, damages } from '../helpers/damage.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { openDirSession } from '../helpers/dir-world.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * The relay directory is untrusted input (proposals/relay.md §Untrusted input). Device "writer" pushes three
 * segments, device "clean" one; the folder is then tampered with, and a fresh device "reader"
 * must reject or ignore the damage, report it by kind, and still sync every valid op.
 */
describe('a tampered relay directory', () => {
  async function scene() {
    const relay = await tempDir();
    const writer = await openDirSession(relay, await tempDir(), 'writer');
    const clean = await openDirSession(relay, await tempDir(), 'clean');
    for (let segment = 0; segment < 3; segment++) {
      for (let i = 0; i < 3; i++) await writer.append({ surface: 'knowledge', payload: { id: `w${segment}-${i}` }, scope: 'personal' });
      await writer.pump();
    }
    await clean.append({ surface: 'skill', payload: { id: 'c0' }, scope: 'personal' });
    await clean.append({ surface: 'skill', payload: { id: 'c1' }, scope: 'personal' });
    await clean.pump();
    await writer.close();
    await clean.close();
    const opsDir = join(relay, 'devices', 'writer', 'ops');
    const segments = (await readdir(opsDir)).sort().map((name) => join(opsDir, name));
    return { relay, opsDir, segments };
  }

  async function read(relay: string): Promise<Session> {
    const reader = await openDirSession(relay, await tempDir(), 'reader');
    await reader.pump();
    return reader;
  }

  function synced(reader: Session): string[] {
    return [
      ...reader.state.page('knowledge', null, 100).items.map((r) => r.key),
      ...reader.state.page('skill', null, 100).items.map((r) => r.key),
    ];
  }

  async function rewriteLine(path: string, line: number, edit: (text: string) => string): Promise<void> {
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines[line] = edit(lines[line]!);
    await writeFile(path, lines.join('\n'));
  }

  it('rejects a changed payload by name and keeps the ops before it', async () => {
    const { relay, segments } = await scene();
    await rewriteLine(segments[1]!, 2, (line) => line.replace('"ct":"', '"ct":"AAAA'));
    const reader = await read(relay);
    expect(reader.status().counts.rejected).toEqual({ id_mismatch: 1 });
    expect(synced(reader)).toEqual(['w0-0', 'w0-1', 'w0-2', 'w1-0', 'c0', 'c1']);
    await reader.close();
  });

  it('uses the valid prefix of a truncated segment and reports it', async () => {
    const { relay, segments } = await scene();
    const size = (await readFile(segments[1]!)).length;
    await truncate(segments[1]!, size - 40);
    const reader = await read(relay);
    expect(reader.status().counts.ignored_relay_files).toMatchObject({ segment_corrupt: 1 });
    expect(synced(reader)).toEqual(['w0-0', 'w0-1', 'w0-2', 'w1-0', 'w1-1', 'c0', 'c1']);
    await reader.close();
  });

  it('rejects a run whose head signature is forged and keeps the signed prefix', async () => {
    const { relay, segments } = await scene();
    const sigOf = async (path: string, line: number) =>
      (JSON.parse((await readFile(path, 'utf8')).split('\n')[line]!) as { sig: string }).sig;
    const other = await sigOf(segments[0]!, 1);
    await rewriteLine(segments[2]!, 3, (line) => line.replace(/"sig":"[^"]+"/, `"sig":"${other}"`));
    const reader = await read(relay);
    expect(reader.status().counts.rejected).toEqual({ bad_signature: 1 });
    expect(synced(reader)).toEqual(['w0-0', 'w0-1', 'w0-2', 'w1-0', 'w1-1', 'w1-2', 'w2-0', 'w2-1', 'c0', 'c1']);
    await reader.close();
  });

  it("ignores and counts garbage, sync-conflict copies and a segment holding another device's ops", async () => {
    const { relay, opsDir, segments } = await scene();
    await writeFile(join(opsDir, 'notes.txt~'), 'editor leftover');
    await copyFile(segments[0]!, join(opsDir, '000000000000.sync-conflict-20261124-120000-ABCDEF.jsonl'));
    const thief = join(relay, 'devices', 'thief', 'ops');
    await mkdir(thief, { recursive: true });
    await writeFile(
      join(relay, 'devices', 'thief', 'device.json'),
      JSON.stringify({ opsync_device: 1, device_id: 'thief', public_key: 'x', added_ms: 0 }),
    );
    await copyFile(segments[0]!, join(thief, '000000000000.jsonl'));
    await writeFile(join(relay, 'devices', 'Not A Device'), 'junk');
    const reader = await read(relay);
    expect(reader.status().counts.ignored_relay_files).toEqual({ not_layout: 2, conflict_copy: 1, foreign_ops: 1 });
    expect(reader.status().counts.rejected).toEqual({});
    expect(synced(reader)).toHaveLength(11);
    await reader.close();
  });

  it('does not read files larger than any file of the layout: a huge ack or segment is counted, not loaded', async () => {
    const { relay, opsDir } = await scene();
    // Valid JSON, and a well-formed segment header: only their size gives them away.
    const ack = join(relay, 'devices', 'clean', 'ack.json');
    await writeFile(ack, JSON.stringify({ opsync_ack: 1, acked: {}, last_seen_ms: 1, pad: 'x'.repeat(2 * 2 ** 20) }));
    const header = JSON.stringify({ opsync_segment: 1, device_id: 'writer', first_seq: 9, count: 1 });
    await writeFile(join(opsDir, '000000000009.jsonl'), `${header}\n${'y'.repeat(MAX_SEGMENT_BYTES)}\n`);
    const reader = await read(relay);
    expect(reader.status().counts.ignored_relay_files).toEqual({ ack_file_invalid: 1, segment_corrupt: 1 });
    expect(synced(reader)).toHaveLength(11);
    await reader.close();
  });

  it('stops at a damaged first segment instead of taking it for collected history: the other devices still sync', async () => {
    const { relay, segments } = await scene();
    await rewriteLine(segments[0]!, 0, (line) => line.replace('{', '['));
    const reader = await read(relay);
    expect(reader.status().counts.ignored_relay_files).toEqual({ segment_corrupt: 1 });
    expect(synced(reader)).toEqual(['c0', 'c1']);
    await reader.close();
  });

  it('starts a new device from the ops when the latest checkpoint is damaged, and says so', async () => {
    const relay = await tempDir();
    const writer = await openDirSession(relay, await tempDir(), 'writer');
    for (let i = 0; i < 5; i++) await writer.append({ surface: 'knowledge', payload: { id: `k${i}` }, scope: 'personal' });
    await writer.pump();
    const { checkpoint_hash } = await writer.checkpoint();
    await writer.close();
    await rewriteLine(
      join(relay, 'checkpoints', `${checkpoint_hash!}.jsonl`),
      1,
      (line) => line.slice(0, 40) + (line[40] === 'A' ? 'B' : 'A') + line.slice(41),
    );
    const logged: string[] = [];
    const reader = await openDirSession(
      relay,
      await tempDir(),
      'reader',
      {},
      { info: () => {}, warn: (_fields, message) => logged.push(message) },
    );
    expect(logged).toContain("the relay's latest checkpoint cannot be used; syncing from the ops instead");
    expect(reader.status()).toMatchObject({ base_checkpoint: null, last_error: expect.stringContaining(checkpoint_hash!) as unknown });
    await reader.pump();
    expect(reader.state.page('knowledge', null, 10).items.map((record) => record.key)).toEqual(['k0', 'k1', 'k2', 'k3', 'k4']);
    await reader.close();
  });

  it('restores a damaged checkpoint on the relay from a device holding a copy, once a device that needs it reports it', async () => {
    const relay = await tempDir();
    const writer = await openDirSession(relay, await tempDir(), 'writer');
    const reader = await openDirSession(relay, await tempDir(), 'reader');
    for (let i = 0; i < 5; i++) {
      await writer.append({ surface: 'knowledge', payload: { id: `k${i}` }, scope: 'personal' });
      await writer.pump();
    }
    await reader.pump();
    await writer.pump();
    const { checkpoint_hash } = await writer.checkpoint();
    expect((await writer.compact()).relay_dropped_ops).toBeGreaterThan(0);
    const path = join(relay, 'checkpoints', `${checkpoint_hash!}.jsonl`);
    const intact = await readFile(path, 'utf8');
    await rewriteLine(path, 1, (line) => line.slice(0, 40) + (line[40] === 'A' ? 'B' : 'A') + line.slice(41));

    // The ops it covers were collected: a new device needs the checkpoint, and cannot start yet.
    const newcomer = await openDirSession(relay, await tempDir(), 'newcomer', {}, { info: () => {}, warn: () => {} });
    await expect(newcomer.pump()).rejects.toMatchObject({ code: 'decrypt_failed' });
    await writer.pump();
    expect(await readFile(path, 'utf8')).toBe(intact);
    await newcomer.pump();
    expect(newcomer.status().base_checkpoint).toBe(checkpoint_hash);
    expect(newcomer.state.stateHash()).toBe(writer.state.stateHash());
    await Promise.all([writer.close(), reader.close(), newcomer.close()]);
  });

  it("restarts a device whose own copy of its base checkpoint is damaged from the relay's copy, and mends its copy", async () => {
    const relay = await tempDir();
    const dataDir = await tempDir();
    const device = await openDirSession(relay, dataDir, 'laptop');
    for (let i = 0; i < 5; i++) await device.append({ surface: 'knowledge', payload: { id: `k${i}` }, scope: 'personal' });
    await device.pump();
    const { checkpoint_hash } = await device.checkpoint();
    expect(await device.compact()).toMatchObject({ compacted: true, base_checkpoint: checkpoint_hash });
    await device.pump();
    await device.settled();
    const state = device.state.stateHash();
    await device.close();
    const copy = join(dataDir, 'checkpoints', `${checkpoint_hash!}.jsonl`);
    const intact = await readFile(copy, 'utf8');
    await rewriteLine(copy, 1, (line) => line.slice(0, 40) + (line[40] === 'A' ? 'B' : 'A') + line.slice(41));

    const logged: string[] = [];
    const restarted = await openDirSession(
      relay,
      dataDir,
      'laptop',
      {},
      { info: () => {}, warn: (_fields, message) => logged.push(message) },
    );
    expect(logged).toContain("this device's copy of its base checkpoint is damaged; reading the relay's");
    expect(restarted.state.stateHash()).toBe(state);
    await restarted.pump();
    await restarted.settled();
    expect(await readFile(copy, 'utf8')).toBe(intact);
    await restarted.close();
  });

  it('never folds a damaged op, whatever the damage: each device syncs a prefix of its chain', async () => {
    const { relay: pristine, segments } = await scene();
    const names = segments.map((path) => path.slice(pristine.length));
    const damage = fc.record({ file: fc.nat(names.length - 1), changes: damages(4000) });
    const writerChain = ['w0-0', 'w0-1', 'w0-2', 'w1-0', 'w1-1', 'w1-2', 'w2-0', 'w2-1', 'w2-2'];
    await fc.assert(
      fc.asyncProperty(damage, async ({ file, changes }) => {
        const relay = await tempDir();
        await cp(pristine, relay, { recursive: true });
        const path = relay + names[file]!;
        await writeFile(path, changes.reduce(applyDamage, await readFile(path)));
        const reader = await read(relay);
        const keys = synced(reader);
        const fromWriter = keys.filter((key) => key.startsWith('w'));
        expect(fromWriter).toEqual(writerChain.slice(0, fromWriter.length));
        expect(keys.filter((key) => key.startsWith('c'))).toEqual(['c0', 'c1']);
        await reader.close();
      }),
      { numRuns: 40, seed: 20261125 },
    );
  });

  /**
   * Damage is not the end of the story while the writer still holds its ops: the reader stops at
   * the damage and says so in its folder, the writer pushes the damaged ops again from its
   * journal, and the reader then syncs every op (proposals/relay.md §Damaged segments).
   */
  describe('restored by the writer, which still holds its ops', () => {
    const chain = ['w0-0', 'w0-1', 'w0-2', 'w1-0', 'w1-1', 'w1-2', 'w2-0', 'w2-1', 'w2-2'];

    async function live(relay: string) {
      const dataDir = await tempDir();
      const writer = await openDirSession(relay, dataDir, 'writer');
      for (let segment = 0; segment < 3; segment++) {
        for (let i = 0; i < 3; i++) await writer.append({ surface: 'knowledge', payload: { id: `w${segment}-${i}` }, scope: 'personal' });
        await writer.pump();
      }
      const opsDir = join(relay, 'devices', 'writer', 'ops');
      return { writer, dataDir, segments: (await readdir(opsDir)).sort().map((name) => join(opsDir, name)) };
    }

    /**
     * The reader stops at the damage; the writer appends one more op (its push continues from
     * the relay's copy of its chain) and its next pump restores the damage; the reader's next
     * pump syncs the rest.
     */
    async function restored(relay: string, writer: Session): Promise<{ before: string[]; after: string[] }> {
      const reader = await openDirSession(relay, await tempDir(), 'reader');
      await reader.pump();
      const before = synced(reader);
      await writer.append({ surface: 'knowledge', payload: { id: 'w3-0' }, scope: 'personal' });
      await writer.pump();
      await reader.pump();
      const after = synced(reader);
      expect(reader.state.stateHash()).toBe(writer.state.stateHash());
      await reader.close();
      return { before, after };
    }

    const sigOf = async (path: string, line: number) =>
      (JSON.parse((await readFile(path, 'utf8')).split('\n')[line]!) as { sig: string }).sig;
    const cases: Array<[string, (segments: string[]) => Promise<void>, number]> = [
      ['a truncated segment', async ([, middle]) => truncate(middle!, (await readFile(middle!)).length - 40), 5],
      ['a segment whose header is damaged', async ([, middle]) => rewriteLine(middle!, 0, (line) => line.replace('{', '[')), 3],
      ['a deleted segment', async ([, middle]) => rm(middle!), 3],
      // With no checkpoint covering them, missing first ops are a loss, not collected history.
      ['the oldest segment, deleted', async ([oldest]) => rm(oldest!), 0],
      ['the newest segment, its header damaged', async ([, , newest]) => rewriteLine(newest!, 0, (line) => line.replace('{', '[')), 6],
      ['a changed payload', async ([, middle]) => rewriteLine(middle!, 2, (line) => line.replace('"ct":"', '"ct":"AAAA')), 4],
      [
        'a forged signature',
        async ([first, , newest]) => {
          const other = await sigOf(first!, 1);
          await rewriteLine(newest!, 3, (line) => line.replace(/"sig":"[^"]+"/, `"sig":"${other}"`));
        },
        8,
      ],
    ];

    it.each(cases)(
      '%s: the reader stops at it, the writer pushes those ops again, the reader then has every op',
      async (_name, damage, reachable) => {
        const relay = await tempDir();
        const { writer, segments } = await live(relay);
        await damage(segments);
        const { before, after } = await restored(relay, writer);
        expect(before).toEqual(chain.slice(0, reachable));
        expect(after).toEqual([...chain, 'w3-0']);
        await writer.close();
      },
    );

    it.each([
      ['cut', async (path: string) => truncate(path, (await readFile(path)).length - 40)],
      ['deleted', (path: string) => rm(path)],
    ])(
      'when the writer compacted past the damaged ops (%s), it restarts them on the relay above its base: readers rebase, a new device starts',
      async (_kind, damage) => {
        const relay = await tempDir();
        const { writer, dataDir, segments } = await live(relay);
        const reader = await openDirSession(relay, await tempDir(), 'reader');
        await reader.pump();
        await writer.pump();
        await writer.checkpoint();
        expect(await writer.compact()).toMatchObject({ compacted: true });
        await writer.settled();
        await writer.close();
        const left = (await readdir(join(relay, 'devices', 'writer', 'ops'))).filter((name) => name.endsWith('.jsonl'));
        expect(left).toEqual([segments.at(-1)!.split('/').at(-1)]);
        await damage(segments.at(-1)!);

        const again = await openDirSession(relay, dataDir, 'writer');
        await again.append({ surface: 'knowledge', payload: { id: 'w3-0' }, scope: 'personal' });
        await again.pump();
        expect(again.status().counts.unpushed).toBe(0);
        await reader.pump();
        const newcomer = await openDirSession(relay, await tempDir(), 'newcomer');
        await newcomer.pump();
        for (const device of [reader, newcomer]) {
          expect(synced(device)).toEqual([...chain, 'w3-0']);
          expect(device.state.stateHash()).toBe(again.state.stateHash());
        }
        await Promise.all([again.close(), reader.close(), newcomer.close()]);
      },
    );

    it('whatever the damage to one segment, the reader ends with the whole chain once the writer pumps, whether it was running or starts after', async () => {
      const pristine = await tempDir();
      const { writer, dataDir: pristineData, segments } = await live(pristine);
      await writer.close();
      const names = segments.map((path) => path.slice(pristine.length));
      const damage = fc.record({ file: fc.nat(names.length - 1), changes: damages(4000), running: fc.boolean() });
      await fc.assert(
        fc.asyncProperty(damage, async ({ file, changes, running }) => {
          const [relay, dataDir] = [await tempDir(), await tempDir()];
          await cp(pristine, relay, { recursive: true });
          await cp(pristineData, dataDir, { recursive: true });
          const open = () => openDirSession(relay, dataDir, 'writer');
          const earlier = running ? await open() : null;
          await earlier?.pump();
          const path = relay + names[file]!;
          await writeFile(path, changes.reduce(applyDamage, await readFile(path)));
          const again = earlier ?? (await open());
          const { before, after } = await restored(relay, again);
          expect(before).toEqual(chain.slice(0, before.length));
          expect(after).toEqual([...chain, 'w3-0']);
          await again.close();
        }),
        { numRuns: 40, seed: 20261126 },
      );
    });
  });
});

describe('a damaged segment between two running daemons', () => {
  it('is restored with no pump call: the reader reports it, the writer pushes those ops again, both converge', async () => {
    const relay = await tempDir();
    const writer = await DaemonProcess.start(await tempDir(), relay);
    const w = await writer.connect();
    let reader: DaemonProcess | undefined;
    try {
      for (let batch = 0; batch < 3; batch++) {
        for (let i = 0; i < 5; i++) await w.call('sync.append', { surface: 'knowledge', payload: { id: `w${batch}-${i}` } });
        await w.call('sync.pump');
      }
      const { device_id } = await w.call<{ device_id: string }>('sync.status');
      const opsDir = join(relay, 'devices', device_id, 'ops');
      const middle = join(opsDir, (await readdir(opsDir)).sort()[1]!);
      await truncate(middle, (await readFile(middle)).length - 40);

      reader = await DaemonProcess.start(await tempDir(), relay);
      const r = await reader.connect();
      expect((await converged([w, r])).records).toBe(15);
      expect(writer.logs()).toContain('pushed them again from the journal');
      await r.close();
    } finally {
      await w.close();
      await Promise.all([writer.stop(), reader?.stop()]);
    }
  });
});
