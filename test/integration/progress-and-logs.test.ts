import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { WebSocket } from 'ws';
import { describe, expect, it } from 'vitest';
import { ownIdentity } from '../../src/journal/process-identity.js';
import { cli, DaemonProcess } from '../helpers/daemon-process.js';
import { running } from '../helpers/running-daemons.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

describe('progress', () => {
  it('logs opening a large journal step by step, from nothing to all of it, with done and total', async () => {
    const [dataDir, relay] = [await tempDir(), await tempDir()];
    const first = await DaemonProcess.start(dataDir, relay);
    const client = await first.connect();
    // About 20 MB of journal: several of the 4 MiB chunks the journal is read in.
    for (let i = 0; i < 12; i++)
      await client.call('sync.append', { surface: 'knowledge', payload: { id: `big-${i}`, text: 'x'.repeat(700_000) } });
    await client.close();
    await first.stop();
    const size = (await stat(join(dataDir, 'journal.log'))).size;
    expect(size).toBeGreaterThan(3 * 4 * 1024 * 1024);

    const again = await DaemonProcess.start(dataDir, relay);
    await again.stop();
    const steps = again.logEntries().filter((line) => line.component === 'progress' && line.step === 'journal');
    expect(steps[0]).toMatchObject({ done: 0, total: size });
    expect(steps.at(-1)).toMatchObject({ done: size, total: size, msg: `reading the journal (bytes): ${size} of ${size}` });
    for (let i = 1; i < steps.length; i++) expect(steps[i]!.done as number).toBeGreaterThanOrEqual(steps[i - 1]!.done as number);
  });

  it('is shown by opsync wait while a start is under way', async () => {
    const dataDir = await tempDir();
    // A start under way, as the starting daemon records it: this test's own process plays it.
    await writeFile(
      join(dataDir, 'start.json'),
      JSON.stringify({ ...(await ownIdentity()), state: 'starting', progress: { step: 'checkpoint', done: 250, total: 1000 } }),
    );
    const waited = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [cli(), 'wait', '--data-dir', dataDir, '--timeout-ms', '1000'], (error, _stdout, stderr) =>
        resolve({ code: error ? 1 : 0, stderr }),
      ),
    );
    expect(waited.code).toBe(1);
    const lines = waited.stderr.trim().split('\n');
    expect(lines[0]).toBe('opsync: loading a checkpoint (records): 250 of 1000 (25%)');
    expect(lines.at(-1)).toMatch(/^opsync: No daemon answered for .* within the timeout\.$/);
  });
});

describe('logs', () => {
  it('logs connections, and refused tokens, with the address of the peer', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    try {
      const client = await daemon.connect();
      await client.close();
      const refused = new WebSocket((await daemon.info())!.url, { headers: { authorization: 'Bearer wrong' } });
      refused.on('error', () => undefined);
      await once(refused, 'unexpected-response');
      refused.terminate();
      // The daemon writes its log as it goes: the lines are awaited, not assumed written with the answers.
      await daemon.logged((line) => line.msg === 'a client connected' && line.peer === '127.0.0.1');
      await daemon.logged((line) => line.msg === 'a client disconnected' && line.peer === '127.0.0.1');
      await daemon.logged((line) => line.msg === 'refused a connection' && line.peer === '127.0.0.1' && line.status === 401);
      // Expected failures carry their code and sentence, never a stack.
      expect(daemon.logEntries().filter((line) => JSON.stringify(line).includes('"stack"'))).toEqual([]);
    } finally {
      await daemon.stop();
    }
  });

  it('writes lines for people with --log-format pretty', async () => {
    const child = spawn(
      process.execPath,
      [cli(), 'start', '--data-dir', await tempDir(), '--relay', await tempDir(), '--listen', '127.0.0.1:0', '--log-format', 'pretty'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    running.add(child);
    const exited = once(child, 'exit');
    let listening = '';
    for await (const line of createInterface({ input: child.stdout })) {
      if (line.includes('opsync listening')) {
        listening = line;
        break;
      }
    }
    child.kill('SIGTERM');
    await exited;
    running.delete(child);
    expect(listening).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} INFO {2}opsync listening on ws:\/\/127\.0\.0\.1:\d+ {2}url=ws:\/\/127\.0\.0\.1:\d+ .*device_id=/,
    );
  });
});
