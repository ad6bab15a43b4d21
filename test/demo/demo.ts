/**
 * `npm run demo`: two real daemons on one temporary relay directory, driven over their
 * WebSockets, narrated step by step. Everything it starts it stops, and it removes its files.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RpcClient } from '../../src/rpc/ws-transport.js';
import { DaemonProcess } from '../helpers/daemon-process.js';

const root = await mkdtemp(join(tmpdir(), 'opsync-demo-'));
const daemons: DaemonProcess[] = [];
const clients: RpcClient[] = [];
const say = (text: string) => console.log(`\n▸ ${text}`);
const show = (label: string, value: unknown) => console.log(`  ${label}: ${JSON.stringify(value)}`);

/** Resolves with the next sync.changed notification a client receives. */
function nextChange(client: RpcClient): Promise<unknown> {
  return new Promise((resolve) => {
    const stop = client.onNotification((method, params) => {
      if (method !== 'sync.changed') return;
      stop();
      resolve(params);
    });
  });
}

try {
  say(`Starting two daemons, "laptop" and "desktop", on one relay directory (${join(root, 'relay')})`);
  for (const name of ['laptop', 'desktop']) {
    const daemon = await DaemonProcess.start(join(root, name), join(root, 'relay'), ['--device-id', name]);
    daemons.push(daemon);
    show(name, (await daemon.info())!.url);
  }
  const [laptop, desktop] = await Promise.all(daemons.map((d) => d.connect()));
  clients.push(laptop!, desktop!);
  await desktop!.call('sync.subscribe');
  await laptop!.call('sync.subscribe');

  say('The laptop records a piece of knowledge; the desktop is subscribed to changes');
  const changed = nextChange(desktop!);
  show('laptop sync.append', await laptop!.call('sync.append', { surface: 'knowledge', payload: { id: 'deploy-steps', text: 'run the migrations before the deploy' } }));
  show('desktop got sync.changed', await changed);
  show('desktop sync.records knowledge', (await desktop!.call<{ records: unknown[] }>('sync.records', { surface: 'knowledge' })).records);

  say('The desktop updates an agent declaration; the laptop sees it');
  const back = nextChange(laptop!);
  await desktop!.call('sync.append', { surface: 'declagent', payload: { id: 'release-bot', model: 'claude', schedule: 'nightly' } });
  await back;
  const agents = await laptop!.call<{ records: Array<{ payload: unknown; device_id: string }> }>('sync.records', { surface: 'declagent' });
  show('laptop sync.records declagent', agents.records.map((r) => ({ by: r.device_id, payload: r.payload })));

  say('Lease handoff: the laptop takes the lease of agent "release-bot", checks the fence, runs, commits');
  const lease = await laptop!.call<{ epoch: number }>('lease.acquire', { agent_id: 'release-bot', ttl_ms: 30_000 });
  show('laptop lease.acquire', lease);
  show('laptop sync.fence_check run nightly-42', await laptop!.call('sync.fence_check', { agent_id: 'release-bot', run_id: 'nightly-42', epoch: lease.epoch }));
  const committed = nextChange(desktop!);
  show('laptop sync.record_intent committed', await laptop!.call('sync.record_intent', { agent_id: 'release-bot', run_id: 'nightly-42', epoch: lease.epoch, status: 'committed' }));
  await committed;
  show('desktop sync.fence_check run nightly-42 (it must not run it again)', await desktop!.call('sync.fence_check', { agent_id: 'release-bot', run_id: 'nightly-42', epoch: lease.epoch }));
  show('laptop lease.release', await laptop!.call('lease.release', { agent_id: 'release-bot', epoch: lease.epoch }));
  show('desktop lease.acquire', await desktop!.call('lease.acquire', { agent_id: 'release-bot', ttl_ms: 30_000 }));

  say('Both devices folded the same op-set, so their state hashes are equal');
  show('laptop ', await laptop!.call('sync.hash_state'));
  show('desktop', await desktop!.call('sync.hash_state'));
} finally {
  say('Stopping the daemons and removing the demo files');
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(daemons.map((d) => d.stop()));
  await rm(root, { recursive: true, force: true });
}
