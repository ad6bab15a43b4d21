import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOUNDARY_TEXT, INTERRUPTED_RESULT } from '../../src/conversation/repair.js';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { converged } from '../helpers/converged.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { anthropicProblems, openAIProblems } from '../helpers/provider-rules.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs('file');
let daemons: DaemonProcess[] = [];
let a: RpcClient;
let b: RpcClient;

beforeAll(async () => {
  const relay = await tempDir();
  daemons = await Promise.all([DaemonProcess.start(await tempDir(), relay), DaemonProcess.start(await tempDir(), relay)]);
  [a, b] = (await Promise.all(daemons.map((d) => d.connect()))) as [RpcClient, RpcClient];
}, 120_000);

afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
  await Promise.all(daemons.map((d) => d.stop()));
});

type Resume = { messages: unknown[]; system?: string; turns: number; repairs: Record<string, number> };
type Page = { turns: Array<{ op_id: string; content: string; role: string }>; next: string | null; total: number };

/** Resolves once `client` holds `count` turns of the conversation, re-checking on each sync.changed. */
async function holds(client: RpcClient, conversation: string, count: number): Promise<void> {
  await converged([a, b]);
  const { total } = await client.call<Page>('sync.transcript', { conversation_id: conversation, limit: 1 });
  expect(total).toBe(count);
}

describe('conversations across two daemon processes', () => {
  it('a conversation begun on A, with a tool call made on A and answered on B, resumes on B exactly as on A', async () => {
    const chat = 'trip-planning';
    await a.call('sync.record_turn', { conversation_id: chat, role: 'system', content: 'You plan trips.', timestamp: 1 });
    await a.call('sync.record_turn', { conversation_id: chat, role: 'user', content: 'Find me a train to Bergen.', timestamp: 2 });
    const tool_calls = [{ id: 'toolu_01', name: 'search_trains', input: { to: 'Bergen' } }];
    await a.call('sync.record_turn', { conversation_id: chat, role: 'assistant', content: 'Searching.', tool_calls, timestamp: 3 });
    await holds(b, chat, 3);
    // The laptop went to sleep; the tool finished and its result was recorded on the desktop.
    await b.call('sync.record_turn', {
      conversation_id: chat,
      role: 'tool',
      tool_use_id: 'toolu_01',
      content: '07:58 Oslo S → Bergen',
      timestamp: 4,
    });
    await holds(a, chat, 4);

    for (const format of ['anthropic', 'openai'] as const) {
      const onA = await a.call<Resume>('sync.resume', { conversation_id: chat, format });
      const onB = await b.call<Resume>('sync.resume', { conversation_id: chat, format });
      expect(onB).toEqual(onA);
      expect(format === 'anthropic' ? anthropicProblems(onB) : openAIProblems(onB)).toEqual([]);
    }
    const anthropic = await b.call<Resume>('sync.resume', { conversation_id: chat });
    expect(anthropic).toMatchObject({
      format: 'anthropic',
      system: 'You plan trips.',
      turns: 4,
      messages: [
        { role: 'user', content: 'Find me a train to Bergen.' },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'Searching.' },
            { type: 'tool_use', id: 'toolu_01', name: 'search_trains', input: { to: 'Bergen' } },
          ],
        },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_01', content: '07:58 Oslo S → Bergen' }] },
      ],
    });
    // Only the latest turns, for a long conversation: the system prompt stays, and the list still starts with the user.
    const latest = await a.call<Resume>('sync.resume', { conversation_id: chat, max_turns: 2 });
    expect(latest).toEqual(await b.call<Resume>('sync.resume', { conversation_id: chat, max_turns: 2 }));
    expect(anthropicProblems(latest)).toEqual([]);
    expect(latest).toMatchObject({
      system: 'You plan trips.',
      turns: 3,
      omitted_turns: 1,
      messages: [{ role: 'user', content: BOUNDARY_TEXT }, anthropic.messages[1], anthropic.messages[2]],
    });
  });

  it('a call whose result never arrived resumes with the synthetic interrupted result', async () => {
    const chat = 'interrupted';
    await a.call('sync.record_turn', { conversation_id: chat, role: 'user', content: 'Run the migration.' });
    await a.call('sync.record_turn', {
      conversation_id: chat,
      role: 'assistant',
      content: '',
      tool_calls: [{ id: 'call_7', name: 'migrate', input: {} }],
    });
    await holds(b, chat, 2);
    const { messages } = await b.call<Resume>('sync.resume', { conversation_id: chat, format: 'openai' });
    expect(messages.at(-1)).toEqual({ role: 'tool', tool_call_id: 'call_7', content: INTERRUPTED_RESULT });
  });

  it('pages the transcript in (hlc, op_id) order with limit and after, and refuses an unknown cursor', async () => {
    const chat = 'paged';
    for (let i = 0; i < 25; i++)
      await (i % 2 ? a : b).call('sync.record_turn', { conversation_id: chat, role: i % 2 ? 'assistant' : 'user', content: `turn ${i}` });
    await holds(a, chat, 25);
    const whole = await a.call<Page>('sync.transcript', { conversation_id: chat });
    const pages: Page['turns'] = [];
    let after: string | null = null;
    do {
      const page: Page = await a.call<Page>('sync.transcript', { conversation_id: chat, limit: 10, ...(after ? { after } : {}) });
      pages.push(...page.turns);
      after = page.next;
    } while (after);
    expect(pages).toEqual(whole.turns);
    expect(whole.turns.map((t) => t.content)).toEqual(Array.from({ length: 25 }, (_, i) => `turn ${i}`));
    expect(await b.call<Page>('sync.transcript', { conversation_id: chat })).toEqual(whole);
    await expect(a.call('sync.transcript', { conversation_id: chat, after: 'no-such-turn' })).rejects.toMatchObject({
      code: -32602,
      data: { code: 'invalid_params' },
    });
    const { conversations } = await a.call<{ conversations: Array<{ conversation_id: string; turns: number }> }>('sync.conversations');
    expect(conversations).toContainEqual(expect.objectContaining({ conversation_id: chat, turns: 25 }));
  });

  it('refuses a malformed turn with a clear error and writes nothing', async () => {
    const chat = 'bad-input';
    const before = await a.call<{ state_hash: string; records: number }>('sync.hash_state');
    const bad: Array<[object, RegExp]> = [
      [{ role: 'narrator', content: 'x' }, /role must be one of user, assistant, tool, system/],
      [{ role: 'tool', content: 'result' }, /tool turn needs tool_use_id/],
      [{ role: 'assistant', content: 'x', tool_calls: 'search' }, /tool_calls must be an array/],
      [{ role: 'assistant', content: 'x', tool_calls: [{ id: 'c1', input: {} }] }, /tool_calls\[0\]\.name/],
      [{ role: 'assistant', content: 'x', tool_calls: [{ id: 'a.b', name: 'f', input: {} }] }, /tool_calls\[0\]\.id/],
      [{ role: 'assistant', content: 'x', tool_calls: [{ id: 'c1', name: 'f', input: [] }] }, /tool_calls\[0\]\.input must be an object/],
      [{ role: 'user', content: 'x', tool_use_id: 'c1' }, /belong only on tool turns/],
      [{ role: 'user', content: 42 }, /content is required and must be a string/],
      [{ role: 'user', content: 'x', timestamp: 'yesterday' }, /timestamp/],
    ];
    for (const [params, message] of bad) {
      const error = await a.call('sync.record_turn', { conversation_id: chat, ...params }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error, JSON.stringify(params)).toMatchObject({
        code: -32602,
        data: { code: 'invalid_turn' },
        message: expect.stringMatching(message) as unknown,
      });
    }
    await expect(a.call('sync.record_turn', { conversation_id: chat, role: 'user', content: 'x'.repeat(1_100_000) })).rejects.toMatchObject(
      {
        code: -32602,
        data: { code: 'payload_too_large' },
        message: expect.stringMatching(/conversation payload is \d+ bytes.*limit is 1048576/) as unknown,
      },
    );
    expect(await a.call('sync.hash_state')).toEqual(before);
    expect(await a.call<Page>('sync.transcript', { conversation_id: chat })).toMatchObject({ turns: [], total: 0 });
  });
});
