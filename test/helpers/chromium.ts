import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { running } from './running-daemons.js';

/** How long the browser may take to start, and a page to load or a condition to come true. */
const LAUNCH_MS = 60_000;

/**
 * A real headless Chromium (Debian's `chromium`, which .ci/run installs) driven over the Chrome
 * DevTools Protocol on a loopback port: navigate, evaluate, wait for a condition, screenshot.
 */
export class Chromium {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();

  private constructor(
    private readonly child: ChildProcess,
    private readonly page: WebSocket,
    private readonly profile: string,
  ) {
    page.on('message', (data: Buffer) => {
      const message = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      const waiting = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!waiting) return;
      this.pending.delete(message.id!);
      if (message.error) waiting.reject(new Error(message.error.message));
      else waiting.resolve(message.result);
    });
  }

  static async launch(): Promise<Chromium> {
    const profile = await mkdtemp(join(tmpdir(), 'opsync-chromium-'));
    const child = spawn(
      'chromium',
      [
        '--headless',
        // As root (CI containers) Chromium refuses to start sandboxed; the page is our own.
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--no-first-run',
        '--remote-debugging-address=127.0.0.1',
        '--remote-debugging-port=0',
        `--user-data-dir=${profile}`,
        '--window-size=1200,1000',
        'about:blank',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    running.add(child);
    child.once('exit', () => running.delete(child));
    const browserUrl = await new Promise<string>((resolve, reject) => {
      let output = '';
      const timer = setTimeout(() => reject(new Error(`chromium did not start within ${LAUNCH_MS} ms:\n${output}`)), LAUNCH_MS);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`chromium cannot be run (.ci/run installs Debian's chromium): ${error.message}`));
      });
      child.stderr?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        const match = /DevTools listening on (ws:\/\/\S+)/.exec(output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
    });
    const { host } = new URL(browserUrl);
    const targets = (await (await fetch(`http://${host}/json/list`)).json()) as Array<{ type: string; webSocketDebuggerUrl: string }>;
    const target = targets.find((each) => each.type === 'page');
    if (!target) throw new Error('chromium opened no page');
    const page = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve, reject) => page.once('open', resolve).once('error', reject));
    const browser = new Chromium(child, page, profile);
    await browser.send('Page.enable');
    return browser;
  }

  send(method: string, params: object = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.page.send(JSON.stringify({ id, method, params }));
    });
  }

  async navigate(url: string): Promise<void> {
    const result = (await this.send('Page.navigate', { url })) as { errorText?: string };
    if (result.errorText) throw new Error(`chromium could not open ${url}: ${result.errorText}`);
  }

  /** The value of a JavaScript expression in the page (awaited when it is a promise). */
  async evaluate<T>(expression: string): Promise<T> {
    const { result, exceptionDetails } = (await this.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true })) as {
      result: { value: T };
      exceptionDetails?: { text: string };
    };
    if (exceptionDetails) throw new Error(`the page threw: ${exceptionDetails.text}`);
    return result.value;
  }

  /** Resolves once `expression` is true in the page; fails after `timeoutMs` naming it. */
  async waitFor(expression: string, timeoutMs = LAUNCH_MS): Promise<void> {
    const ok = await this.evaluate<boolean>(`new Promise((resolve) => {
      const deadline = Date.now() + ${timeoutMs};
      const look = () => { let ok = false; try { ok = Boolean(${expression}); } catch {} ;
        if (ok || Date.now() > deadline) resolve(ok); else setTimeout(look, 50); };
      look();
    })`);
    if (!ok) throw new Error(`the page never showed ${expression} within ${timeoutMs} ms`);
  }

  async screenshot(path: string): Promise<void> {
    const { data } = (await this.send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true })) as { data: string };
    await writeFile(path, Buffer.from(data, 'base64'));
  }

  async close(): Promise<void> {
    this.page.close();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGTERM');
      await exited;
    }
    await rm(this.profile, { recursive: true, force: true });
  }
}
