import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { Chromium } from '../helpers/chromium.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * A host's page, as an Electron renderer, a Tauri webview or a local web UI would have it: a
 * browser `WebSocket`, which cannot send `Authorization`, carries the token as a subprotocol
 * (proposals/rpc.md §Transport). `run` subscribes, appends and resolves with what came back.
 */
const PAGE = `<!doctype html><meta charset="utf-8"><title>host</title><script>
window.run = (url, token) => new Promise((resolve) => {
  const ws = new WebSocket(url, ['opsync.v1', 'opsync.bearer.' + token]);
  const answers = {};
  let opened = false;
  ws.onopen = () => {
    opened = true;
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'sync.subscribe', params: {} }));
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'sync.append', params: { surface: 'knowledge', payload: { id: 'from-the-page' } } }));
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.id) answers[message.id] = message.result || message.error;
    if (message.method === 'sync.changed') resolve({ protocol: ws.protocol, answers, changed: message.params });
  };
  ws.onclose = (event) => resolve({ opened, closed: event.code });
});
</script>`;

async function pageServer(): Promise<{ server: Server; origin: string }> {
  const server = createServer((request, response) => {
    const path = request.url ?? '/';
    if (path === '/client-page')
      return void readFile('examples/browser-page.html').then((page) => response.writeHead(200, { 'content-type': 'text/html' }).end(page));
    const module = /^\/client\/([a-z-]+)\.js$/.exec(path);
    if (module)
      return void readFile(join(process.cwd(), 'dist', 'src', 'client', `${module[1]}.js`)).then(
        (code) => response.writeHead(200, { 'content-type': 'text/javascript' }).end(code),
        () => response.writeHead(404).end(),
      );
    response.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('a browser page', () => {
  it('connects with the token as a subprotocol from an allowed origin, appends and hears the change; from another origin it is refused', async () => {
    const [allowed, foreign] = [await pageServer(), await pageServer()];
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir(), ['--allow-origin', allowed.origin]);
    const browser = await Chromium.launch();
    try {
      const { url } = (await daemon.info())!;
      const token = await daemon.token();
      await browser.navigate(allowed.origin);
      await browser.waitFor('typeof window.run === "function"');
      const ran = await browser.evaluate<{ protocol: string; answers: Record<string, unknown>; changed: unknown }>(
        `run(${JSON.stringify(url)}, ${JSON.stringify(token)})`,
      );
      // The server answers with opsync.v1, never with the subprotocol that carries the token.
      expect(ran.protocol).toBe('opsync.v1');
      expect(ran.answers['2']).toMatchObject({ seq: 0 });
      expect(ran.changed).toMatchObject({ surfaces: ['knowledge'], origins: ['local'] });

      await browser.navigate(foreign.origin);
      await browser.waitFor('typeof window.run === "function"');
      expect(await browser.evaluate(`run(${JSON.stringify(url)}, ${JSON.stringify(token)})`)).toEqual({ opened: false, closed: 1006 });
      // A wrong token from the allowed origin is refused too.
      await browser.navigate(allowed.origin);
      await browser.waitFor('typeof window.run === "function"');
      expect(await browser.evaluate(`run(${JSON.stringify(url)}, 'not-the-token')`)).toEqual({ opened: false, closed: 1006 });
      const refusals = await daemon.logged((line) => line.msg === 'refused a connection' && line.status === 403);
      expect(refusals.why).toContain(foreign.origin);
    } finally {
      await browser.close();
      await daemon.stop();
      for (const { server } of [allowed, foreign]) await new Promise((resolve) => server.close(resolve));
    }
  });

  it("runs the client's browser build (examples/browser-page.html): typed calls, the change feed and named errors", async () => {
    const page = await pageServer();
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir(), ['--allow-origin', page.origin]);
    const browser = await Chromium.launch();
    try {
      await browser.navigate(`${page.origin}/client-page`);
      await browser.waitFor('typeof window.runClient === "function"');
      const ran = await browser.evaluate<{ seq: number; change: unknown; refused: unknown }>(
        `runClient(${JSON.stringify((await daemon.info())!.url)}, ${JSON.stringify(await daemon.token())})`,
      );
      expect(ran.seq).toBe(0);
      expect(ran.change).toMatchObject({ surfaces: ['skill'], origins: ['local'] });
      expect(ran.refused).toEqual({ name: 'OpsyncRpcError', kind: 'lease_lost', code: -32061 });
    } finally {
      await browser.close();
      await daemon.stop();
      await new Promise((resolve) => page.server.close(resolve));
    }
  });
});
