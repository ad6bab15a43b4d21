/**
 * `npm run demo`: two real daemons on one temporary relay directory, driven over their
 * WebSockets, narrated step by step. Everything it starts it stops, and it removes its files.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { until } from '../helpers/converged.js';
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

/** Resolves once `client` holds `count` turns of a conversation. */
async function untilTurns(client: RpcClient, conversation: string, count: number): Promise<void> {
  await until([client], async () =>
    (await client.call<{ total: number }>('sync.transcript', { conversation_id: conversation, limit: 1 })).total >= count
      ? true
      : undefined,
  );
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
  show(
    'laptop sync.append',
    await laptop!.call('sync.append', {
      surface: 'knowledge',
      payload: { id: 'deploy-steps', text: 'run the migrations before the deploy' },
    }),
  );
  show('desktop got sync.changed', await changed);
  show('desktop sync.records knowledge', (await desktop!.call<{ records: unknown[] }>('sync.records', { surface: 'knowledge' })).records);

  say('The desktop updates an agent declaration; the laptop sees it');
  const back = nextChange(laptop!);
  await desktop!.call('sync.append', { surface: 'declagent', payload: { id: 'release-bot', model: 'claude', schedule: 'nightly' } });
  await back;
  const agents = await laptop!.call<{ records: Array<{ payload: unknown; device_id: string }> }>('sync.records', { surface: 'declagent' });
  show(
    'laptop sync.records declagent',
    agents.records.map((r) => ({ by: r.device_id, payload: r.payload })),
  );

  say('Lease handoff: the laptop takes the lease of agent "release-bot", checks the fence, runs, commits');
  const lease = await laptop!.call<{ epoch: number }>('lease.acquire', { agent_id: 'release-bot', ttl_ms: 30_000 });
  show('laptop lease.acquire', lease);
  show(
    'laptop sync.fence_check run nightly-42',
    await laptop!.call('sync.fence_check', { agent_id: 'release-bot', run_id: 'nightly-42', epoch: lease.epoch }),
  );
  const committed = nextChange(desktop!);
  show(
    'laptop sync.record_intent committed',
    await laptop!.call('sync.record_intent', { agent_id: 'release-bot', run_id: 'nightly-42', epoch: lease.epoch, status: 'committed' }),
  );
  await committed;
  show(
    'desktop sync.fence_check run nightly-42 (it must not run it again)',
    await desktop!.call('sync.fence_check', { agent_id: 'release-bot', run_id: 'nightly-42', epoch: lease.epoch }),
  );
  show('laptop lease.release', await laptop!.call('lease.release', { agent_id: 'release-bot', epoch: lease.epoch }));
  show('desktop lease.acquire', await desktop!.call('lease.acquire', { agent_id: 'release-bot', ttl_ms: 30_000 }));

  say('A conversation begun on the laptop: the assistant calls a tool, then the laptop goes to sleep');
  const chat = { conversation_id: 'release-notes' };
  await laptop!.call('sync.record_turn', { ...chat, role: 'system', content: 'You write release notes from merged pull requests.' });
  await laptop!.call('sync.record_turn', { ...chat, role: 'user', content: 'Draft the notes for v2.3.' });
  show(
    'laptop sync.record_turn (assistant with a tool call)',
    await laptop!.call('sync.record_turn', {
      ...chat,
      role: 'assistant',
      content: 'Let me list the merged pull requests.',
      tool_calls: [{ id: 'toolu_01', name: 'list_pulls', input: { milestone: 'v2.3' } }],
    }),
  );
  await untilTurns(desktop!, chat.conversation_id, 3);
  say("The tool finishes on the desktop, which records its result and the user's next question");
  await desktop!.call('sync.record_turn', {
    ...chat,
    role: 'tool',
    tool_use_id: 'toolu_01',
    content: '#812 faster sync, #815 lease fencing, #820 conversation resume',
  });
  await desktop!.call('sync.record_turn', { ...chat, role: 'user', content: 'Group them by area, please.' });
  const transcript = await desktop!.call<{ turns: Array<{ role: string; device_id: string }> }>('sync.transcript', chat);
  show(
    'desktop sync.transcript',
    transcript.turns.map((t) => `${t.role}@${t.device_id}`),
  );
  say('The desktop resumes the conversation: the message list exactly as the Anthropic Messages API receives it');
  const resumed = await desktop!.call<{ system: string; messages: unknown[]; repairs: unknown }>('sync.resume', {
    ...chat,
    format: 'anthropic',
  });
  console.log(
    JSON.stringify({ model: '<your model>', max_tokens: 1024, system: resumed.system, messages: resumed.messages }, null, 2).replace(
      /^/gm,
      '  ',
    ),
  );
  say('…and in OpenAI Chat Completions shape');
  const openai = await desktop!.call<{ messages: unknown[] }>('sync.resume', { ...chat, format: 'openai' });
  console.log(JSON.stringify({ model: '<your model>', messages: openai.messages }, null, 2).replace(/^/gm, '  '));

  await untilTurns(laptop!, chat.conversation_id, 5);
  say('Both devices folded the same op-set, so their state hashes are equal');
  show('laptop ', await laptop!.call('sync.hash_state'));
  show('desktop', await desktop!.call('sync.hash_state'));
} finally {
  say('Stopping the daemons and removing the demo files');
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(daemons.map((d) => d.stop()));
  await rm(root, { recursive: true, force: true });
}
