import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Chromium } from '../helpers/chromium.js';
import { cli, DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/** Where tests keep what a person may want to look at after a run (git ignores it). */
const ARTIFACTS = join(process.cwd(), 'test-artifacts');

function statusWeb(dataDir: string): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [cli(), 'status', '--web', '--data-dir', dataDir], { timeout: 60_000 }, (error, stdout) =>
      error ? reject(new Error(`opsync status --web failed: ${error.message}`)) : resolve(stdout.split('\n')[0]!),
    ),
  );
}

describe('the status page', () => {
  it('shows the devices, a lease with its holder and the conversations in Chromium, opened by a one-time link', async () => {
    const relay = await tempDir();
    const a = await DaemonProcess.start(await tempDir(), relay);
    const b = await DaemonProcess.start(await tempDir(), relay);
    let browser: Chromium | null = null;
    try {
      const [deviceA, deviceB] = [(await a.info())!.device_id, (await b.info())!.device_id];
      const [clientA, clientB] = [await a.connect(), await b.connect()];
      await clientA.call('lease.acquire', { agent_id: 'agent-page', ttl_ms: 600_000 });
      await clientA.call('sync.record_turn', {
        conversation_id: 'trip-to-bergen',
        role: 'user',
        content: 'Find me a train.',
        timestamp: 1,
      });
      await clientB.call('sync.pump');
      // An explicit pump reads the relay's roster afresh: A's status now lists B.
      await clientA.call('sync.pump');
      const { roster } = await clientA.call<{ roster: Array<{ device_id: string }> }>('sync.status');
      expect(roster.map((entry) => entry.device_id)).toContain(deviceB);
      await clientA.close();
      await clientB.close();

      const link = await statusWeb(a.dataDir);
      expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/status\/open\?code=[\w-]+$/);
      expect(link).not.toContain(await a.token());
      const origin = new URL(link).origin;
      // Without the page's cookie nothing of the user's is served.
      expect((await fetch(`${origin}/status`)).status).toBe(401);
      expect((await fetch(`${origin}/status/data`)).status).toBe(401);
      // A refusal naming what a stranger sent is shown among the warnings, as text, never as markup.
      const hostile = '<img src=x onerror="document.body.dataset.pwned=1">';
      const refused = await fetch(`${origin}/healthz`, { headers: { authorization: `Bearer ${await a.token()}`, origin: hostile } });
      expect(refused.status).toBe(403);

      browser = await Chromium.launch();
      await browser.navigate(link);
      await browser.waitFor(`document.body && document.body.dataset.loaded === 'true'`);
      // The code is gone from the address, and the cookie is out of the page's reach.
      expect(await browser.evaluate<string>('location.pathname + location.search')).toBe('/status');
      expect(await browser.evaluate<string>('document.cookie')).toBe('');
      const devices = await browser.evaluate<string>(`document.querySelector('#devices').innerText`);
      expect(devices).toContain(`${deviceA} (this device)`);
      expect(devices).toContain(deviceB);
      const leases = await browser.evaluate<string>(`document.querySelector('#leases').innerText`);
      expect(leases).toContain('agent-page');
      expect(leases).toContain(deviceA);
      expect(await browser.evaluate<string>(`document.querySelector('#conversations').innerText`)).toContain('trip-to-bergen');
      expect(await browser.evaluate<number>(`document.querySelectorAll('#chart-appends svg path').length`)).toBe(1);
      expect(await browser.evaluate<string>(`document.querySelector('#caption-appends').textContent`)).toMatch(/^Appends: 1 in the last/);
      expect(await browser.evaluate<string>(`document.querySelector('#errors').innerText`)).toContain(hostile);
      expect(await browser.evaluate<number>(`document.querySelectorAll('#errors img').length`)).toBe(0);
      expect(await browser.evaluate<string | null>('document.body.dataset.pwned ?? null')).toBeNull();
      await mkdir(ARTIFACTS, { recursive: true });
      await browser.screenshot(join(ARTIFACTS, 'status-page.png'));

      // The link opened the page once: used again, it opens nothing.
      const again = await fetch(link, { redirect: 'manual' });
      expect(again.status).toBe(403);
      expect(again.headers.get('set-cookie')).toBeNull();
    } finally {
      await browser?.close();
      await a.stop();
      await b.stop();
    }
  });
});
