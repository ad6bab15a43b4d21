import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  fenced,
  FenceRefused,
  fromDataDir,
  OpsyncRpcError,
  type Change,
  type ConnectionState,
  type EffectContext,
} from '../../src/client/node.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/** Resolves with the rejection of `call`, which must reject with an `OpsyncRpcError`. */
async function refusal(call: Promise<unknown>): Promise<OpsyncRpcError> {
  const error = await call.then(
    () => null,
    (failure: unknown) => failure,
  );
  if (!(error instanceof OpsyncRpcError)) throw new Error(`expected an OpsyncRpcError, got ${String(error)}`);
  return error;
}

describe('the typed client', () => {
  it('calls namespaced, typed methods and names failures by code and kind', async () => {
    const dataDir = await tempDir();
    const daemon = await DaemonProcess.start(dataDir, await tempDir());
    const client = await fromDataDir(dataDir);
    try {
      const appended = await client.sync.append({ surface: 'knowledge', payload: { id: 'k1' } });
      expect(appended.seq).toBe(0);
      const lease = await client.lease.acquire({ agent_id: 'agent-1', ttl_ms: 60_000 });
      expect(lease.holder).toBe((await daemon.info())!.device_id);
      const held = await refusal(client.lease.acquire({ agent_id: 'agent-1', ttl_ms: 60_000 }));
      expect([held.code, held.kind]).toEqual([-32060, 'lease_held']);
      const status = await client.sync.status();
      expect(status.counts.records).toBe(1);
      const aborted = new AbortController();
      aborted.abort();
      expect((await refusal(client.sync.status(undefined, { signal: aborted.signal }))).kind).toBe('aborted');
    } finally {
      client.close();
      await daemon.stop();
    }
  });

  it('finds the daemon again after a restart on another port, renews its subscription, and runs a call made meanwhile', async () => {
    const [dataDir, relay] = [await tempDir(), await tempDir()];
    let daemon = await DaemonProcess.start(dataDir, relay);
    const client = await fromDataDir(dataDir, { backoffMs: { first: 50, max: 500 } });
    const states: ConnectionState[] = [];
    client.onState((state) => states.push(state));
    const changes: Change[] = [];
    await client.subscribe({ surfaces: ['skill'] }, (change) => changes.push(change));
    try {
      await daemon.stop();
      if (client.connectionState !== 'reconnecting') await new Promise<void>((resolve) => client.onState(() => resolve()));
      // With no daemon, a call waits for one within its timeout, then names why it failed.
      expect((await refusal(client.sync.hash_state(undefined, { timeoutMs: 200 }))).kind).toBe('timeout');
      const meanwhile = client.sync.append({ surface: 'skill', payload: { id: 'made-meanwhile' } }, { timeoutMs: 60_000 });
      // On port 0 again: it listens where daemon.json now says, which the client reads again.
      daemon = await DaemonProcess.start(dataDir, relay);
      expect((await meanwhile).seq).toBe(0);
      expect(states).toEqual(['reconnecting', 'open']);
      // The renewed subscription hears another connection's append.
      const other = await daemon.connect();
      const heard = new Promise<Change>((resolve) => client.onChange((change) => change.surfaces.includes('skill') && resolve(change)));
      await other.call('sync.append', { surface: 'skill', payload: { id: 'from-another-connection' } });
      expect(await heard).toMatchObject({ surfaces: ['skill'], origins: ['local'] });
      await other.close();
      expect(changes.length).toBeGreaterThanOrEqual(1);
    } finally {
      client.close();
      await daemon.stop();
    }
  });

  it('is typed strictly enough that tsc --strict refuses a misuse (examples/node-host.ts)', async () => {
    const child = execFile(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'examples/tsconfig.json'], { timeout: 120_000 });
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number];
    expect(output).toBe('');
    expect(code).toBe(0);
  });
});

describe('fenced()', () => {
  it('runs an effect once across two devices: committed, then already committed; refused while another device holds the lease', async () => {
    const relay = await tempDir();
    const [dirA, dirB] = [await tempDir(), await tempDir()];
    const [a, b] = [await DaemonProcess.start(dirA, relay), await DaemonProcess.start(dirB, relay)];
    const [clientA, clientB] = [await fromDataDir(dirA), await fromDataDir(dirB)];
    const effects: string[] = [];
    const effect = (device: string) => (context: EffectContext) => {
      effects.push(`${device} ${context.idempotencyKey} at ${context.epoch}`);
      return Promise.resolve(device);
    };
    try {
      const first = await fenced(clientA, { agent_id: 'agent-f', run_id: 'r1' }, effect('a'));
      expect(first).toMatchObject({ status: 'committed', result: 'a', epoch: 1 });
      // The lease is kept for the agent's next run: B cannot take it meanwhile.
      const refused = await fenced(clientB, { agent_id: 'agent-f', run_id: 'r2' }, effect('b')).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(FenceRefused);
      expect((refused as FenceRefused).kind).toBe('lease_held');
      // A again: the same run is not run twice, and a new run reuses the lease.
      expect(await fenced(clientA, { agent_id: 'agent-f', run_id: 'r1' }, effect('a'))).toMatchObject({ status: 'already_committed' });
      expect(await fenced(clientA, { agent_id: 'agent-f', run_id: 'r2' }, effect('a'))).toMatchObject({ status: 'committed', epoch: 1 });
      // A fails over to B: B sees r1 committed (once synced) and runs only what is new.
      await clientA.lease.release({ agent_id: 'agent-f', epoch: 1 });
      await clientA.sync.pump();
      await clientB.sync.pump();
      expect(await fenced(clientB, { agent_id: 'agent-f', run_id: 'r1' }, effect('b'))).toMatchObject({ status: 'already_committed' });
      expect(await fenced(clientB, { agent_id: 'agent-f', run_id: 'r3' }, effect('b'))).toMatchObject({ status: 'committed', epoch: 2 });
      expect(effects).toEqual(['a agent-f/r1 at 1', 'a agent-f/r2 at 1', 'b agent-f/r3 at 2']);
      // An effect that throws is recorded failed and its error comes back.
      await expect(
        fenced(clientB, { agent_id: 'agent-f', run_id: 'r4' }, () => Promise.reject(new Error('the API said no'))),
      ).rejects.toThrow('the API said no');
      const { records } = await clientB.sync.records({ surface: 'intent' });
      expect(records.find((record) => record.key.endsWith('r4'))).toMatchObject({ payload: { status: 'failed' } });
    } finally {
      clientA.close();
      clientB.close();
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
