import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * A host that leaks connections can use up the daemon's file descriptors (here a real EMFILE
 * from `ulimit -n`). The daemon must keep answering the connections it has, keep appends
 * durable, say why it cannot sync, and sync again once descriptors are free.
 */
describe('a daemon out of file descriptors', () => {
  it('keeps serving and appending, names the cause of failed pumps, and syncs again once connections close', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir(), [], { openFilesLimit: 256 });
    const client = await daemon.connect();
    const { url } = (await daemon.info())!;
    const token = await daemon.token();
    const flood: WebSocket[] = [];
    try {
      // More connections than descriptors: the daemon accepts what it can, the rest fail to connect.
      // In waves of 32, each authenticating before the next: the daemon closes strangers past 64
      // waiting at once, so only authenticated connections can hold its descriptors.
      const attempts: boolean[] = [];
      for (let wave = 0; wave < 400 / 32; wave++) {
        const opened = await Promise.all(
          Array.from({ length: 32 }, () => {
            const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
            flood.push(ws);
            return new Promise<boolean>((resolve) => {
              ws.once('open', () => resolve(true));
              ws.once('error', () => resolve(false));
              ws.once('close', () => resolve(false));
            });
          }),
        );
        attempts.push(...opened);
      }
      expect(attempts.filter((opened) => !opened).length).toBeGreaterThan(0);

      for (let i = 0; i < 20; i++)
        expect(await client.call('sync.append', { surface: 'knowledge', payload: { id: `k${i}` } })).toMatchObject({ seq: i });
      await expect(client.call('sync.pump')).rejects.toMatchObject({
        data: { code: 'relay_unavailable' },
        message: expect.stringContaining('too many files are open') as unknown,
      });

      await Promise.all(
        flood.map(
          (ws) =>
            new Promise<void>((resolve) => {
              if (ws.readyState === WebSocket.CLOSED) return resolve();
              ws.once('close', () => resolve());
              ws.terminate();
            }),
        ),
      );
      flood.length = 0;
      // (A background pump may push them first: what counts is that they are on the relay now.)
      await client.call('sync.pump');
      expect(await client.call('sync.status')).toMatchObject({ last_error: null, counts: { records: 20, unpushed: 0 } });
    } finally {
      for (const ws of flood) ws.terminate();
      await client.close();
      await daemon.stop();
    }
  });
});
