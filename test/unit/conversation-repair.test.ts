import { describe, expect, it } from 'vitest';
import { toAnthropic, toOpenAI } from '../../src/conversation/provider-format.js';
import { BOUNDARY_TEXT, INTERRUPTED_RESULT, latestTurns, repair, type RepairRule } from '../../src/conversation/repair.js';
import type { ToolCall, Turn } from '../../src/conversation/turn.js';
import type { Role } from '../../src/fold/payload-rules.js';
import type { Hlc } from '../../src/oplog/hlc.js';
import type { DeviceId, OpId } from '../../src/oplog/ids.js';
import { anthropicProblems, openAIProblems } from '../helpers/provider-rules.js';

/** Turns in transcript order; the repair looks only at their order and fields. */
function transcript(...specs: Array<[Role, string, Partial<Pick<Turn, 'tool_calls' | 'tool_use_id' | 'is_error'>>?]>): Turn[] {
  return specs.map(([role, content, extra], i) => ({
    op_id: `op-${i}` as OpId,
    hlc: { wall_ms: i, counter: 0, device_id: 'device-a' } as unknown as Hlc,
    device_id: 'device-a' as DeviceId,
    conversation_id: 'c',
    role,
    content,
    timestamp: i,
    ...extra,
  }));
}

const call = (id: string, name = 'search'): ToolCall => ({ id, name, input: { q: id } });

/** Repairs, checks both provider shapes against the oracle, and returns all three views. */
function resume(turns: Turn[]) {
  const repaired = repair(turns);
  const anthropic = toAnthropic(repaired);
  const openai = toOpenAI(repaired);
  expect(anthropicProblems(anthropic)).toEqual([]);
  expect(openAIProblems(openai)).toEqual([]);
  return { repaired, anthropic, openai };
}

function fired(counts: Record<RepairRule, number>): Partial<Record<RepairRule, number>> {
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0));
}

describe('resume repair rules (proposals/conversation.md), one test per rule', () => {
  it('a well-formed conversation passes through unchanged, with no rule firing', () => {
    const { repaired, anthropic, openai } = resume(
      transcript(
        ['system', 'Be brief.'],
        ['user', 'Weather in Oslo?'],
        ['assistant', 'Checking.', { tool_calls: [call('toolu_1', 'weather')] }],
        ['tool', '3°C, rain', { tool_use_id: 'toolu_1' }],
        ['assistant', 'Cold and wet.'],
      ),
    );
    expect(fired(repaired.repairs)).toEqual({});
    expect(anthropic).toEqual({
      system: 'Be brief.',
      messages: [
        { role: 'user', content: 'Weather in Oslo?' },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'Checking.' },
            { type: 'tool_use', id: 'toolu_1', name: 'weather', input: { q: 'toolu_1' } },
          ],
        },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: '3°C, rain' }] },
        { role: 'assistant', content: 'Cold and wet.' },
      ],
    });
    expect(openai.messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Weather in Oslo?' },
      {
        role: 'assistant',
        content: 'Checking.',
        tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'weather', arguments: '{"q":"toolu_1"}' } }],
      },
      { role: 'tool', tool_call_id: 'toolu_1', content: '3°C, rain' },
      { role: 'assistant', content: 'Cold and wet.' },
    ]);
  });

  it('dangling_call_completed: a call with no result gets a synthetic error result right after its assistant turn', () => {
    const { repaired, anthropic, openai } = resume(
      transcript(['user', 'Deploy it.'], ['assistant', '', { tool_calls: [call('call_1', 'deploy')] }], ['user', 'Are you there?']),
    );
    expect(fired(repaired.repairs)).toEqual({ dangling_call_completed: 1 });
    expect(anthropic.messages[2]).toEqual({
      role: 'user',
      content: [
        { type: 'tool_result', tool_use_id: 'call_1', content: INTERRUPTED_RESULT, is_error: true },
        { type: 'text', text: 'Are you there?' },
      ],
    });
    expect(openai.messages.slice(1, 4)).toEqual([
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'deploy', arguments: '{"q":"call_1"}' } }],
      },
      { role: 'tool', tool_call_id: 'call_1', content: INTERRUPTED_RESULT },
      { role: 'user', content: 'Are you there?' },
    ]);
    expect(INTERRUPTED_RESULT).toMatch(/interrupted/);
  });

  it('orphan_result_dropped: a tool result whose call is nowhere in the transcript is dropped', () => {
    const { repaired, anthropic } = resume(
      transcript(['tool', 'stale output', { tool_use_id: 'call_9' }], ['user', 'Hi'], ['assistant', 'Hello']),
    );
    expect(fired(repaired.repairs)).toEqual({ orphan_result_dropped: 1 });
    expect(JSON.stringify(anthropic)).not.toContain('stale output');
  });

  it('result_moved: a late result (other turns in between) and an out-of-order one (before its call) are placed right after the call', () => {
    const turns = transcript(
      ['tool', 'early result', { tool_use_id: 'call_b' }],
      ['user', 'Two lookups please.'],
      ['assistant', 'On it.', { tool_calls: [call('call_a'), call('call_b')] }],
      ['user', 'Also, hurry.'],
      ['tool', 'late result', { tool_use_id: 'call_a' }],
    );
    const { repaired, openai } = resume(turns);
    expect(fired(repaired.repairs)).toEqual({ result_moved: 2 });
    expect(openai.messages.slice(2)).toEqual([
      { role: 'tool', tool_call_id: 'call_a', content: 'late result' },
      { role: 'tool', tool_call_id: 'call_b', content: 'early result' },
      { role: 'user', content: 'Also, hurry.' },
    ]);
  });

  it('duplicate_call_dropped and duplicate_result_dropped: a tool-call id appears once in the output, with its first result', () => {
    const turns = transcript(
      ['user', 'Search.'],
      ['assistant', 'Searching.', { tool_calls: [call('call_1'), call('call_1')] }],
      ['tool', 'first', { tool_use_id: 'call_1' }],
      ['tool', 'second', { tool_use_id: 'call_1' }],
      ['assistant', 'Again.', { tool_calls: [call('call_1')] }],
    );
    const { repaired, anthropic } = resume(turns);
    expect(fired(repaired.repairs)).toEqual({ duplicate_call_dropped: 2, duplicate_result_dropped: 1 });
    const text = JSON.stringify(anthropic);
    expect(text.match(/"tool_use"/g)).toHaveLength(1);
    expect(text).toContain('"first"');
    expect(text).not.toContain('"second"');
    expect(anthropic.messages.at(-1)).toEqual({ role: 'assistant', content: 'Again.' });
  });

  it('same_role_merged: turns typed at once on two devices become one message each, in order', () => {
    const { repaired, anthropic, openai } = resume(
      transcript(
        ['user', 'From the laptop'],
        ['user', 'From the phone'],
        ['assistant', 'One'],
        ['assistant', 'Two', { tool_calls: [call('call_1')] }],
        ['tool', 'ok', { tool_use_id: 'call_1' }],
      ),
    );
    expect(fired(repaired.repairs)).toEqual({ same_role_merged: 2 });
    expect(anthropic.messages[0]).toEqual({
      role: 'user',
      content: [
        { type: 'text', text: 'From the laptop' },
        { type: 'text', text: 'From the phone' },
      ],
    });
    expect(anthropic.messages[1]!.content).toEqual([
      { type: 'text', text: 'One' },
      { type: 'text', text: 'Two' },
      { type: 'tool_use', id: 'call_1', name: 'search', input: { q: 'call_1' } },
    ]);
    expect(openai.messages[0]).toEqual({
      role: 'user',
      content: [
        { type: 'text', text: 'From the laptop' },
        { type: 'text', text: 'From the phone' },
      ],
    });
  });

  it('boundary_inserted: a list that would start with the assistant starts with a user turn', () => {
    const { repaired, anthropic, openai } = resume(transcript(['system', 'Rules.'], ['assistant', 'Welcome back!'], ['user', 'Thanks']));
    expect(fired(repaired.repairs)).toEqual({ boundary_inserted: 1 });
    expect(anthropic.messages[0]).toEqual({ role: 'user', content: BOUNDARY_TEXT });
    expect(openai.messages.slice(0, 2)).toEqual([
      { role: 'system', content: 'Rules.' },
      { role: 'user', content: BOUNDARY_TEXT },
    ]);
  });

  it('system_hoisted: system turns become the system prompt, in order, wherever they were', () => {
    const { repaired, anthropic, openai } = resume(
      transcript(['system', 'First rule.'], ['user', 'Hi'], ['system', 'Second rule.'], ['assistant', 'Hello']),
    );
    expect(fired(repaired.repairs)).toEqual({ system_hoisted: 1 });
    expect(anthropic.system).toBe('First rule.\n\nSecond rule.');
    expect(anthropic.messages.map((m) => m.role)).toEqual(['user', 'assistant']);
    expect(openai.messages[0]).toEqual({ role: 'system', content: 'First rule.\n\nSecond rule.' });
  });

  it('blank_dropped: whitespace-only turns add nothing (the API refuses empty text)', () => {
    const { repaired, anthropic } = resume(
      transcript(['user', 'Hi'], ['user', '  \n'], ['assistant', ''], ['system', ' '], ['assistant', 'Hello']),
    );
    expect(fired(repaired.repairs)).toEqual({ blank_dropped: 3 });
    expect(anthropic.messages).toHaveLength(2);
    expect(anthropic.system).toBeUndefined();
  });

  it('Anthropic only: a final assistant message ending in whitespace is trimmed; OpenAI keeps it', () => {
    const { anthropic, openai } = resume(transcript(['user', 'Hi'], ['assistant', 'Hello there.\n\n']));
    expect(anthropic.messages[1]!.content).toBe('Hello there.');
    expect(openai.messages[1]).toEqual({ role: 'assistant', content: 'Hello there.\n\n' });
  });

  it('an empty conversation resumes as an empty list', () => {
    expect(resume([]).anthropic).toEqual({ messages: [] });
  });

  it('the oracle is not blind: it names the violations of a broken list', () => {
    expect(
      anthropicProblems({
        messages: [
          { role: 'assistant', content: [{ type: 'tool_use', id: 'a.b', name: 'x', input: {} }] },
          { role: 'assistant', content: [{ type: 'text', text: ' ' }] },
        ],
      }),
    ).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/expected user/),
        expect.stringMatching(/characters the API refuses/),
        expect.stringMatching(/empty text/),
      ]),
    );
    expect(
      openAIProblems({
        messages: [
          { role: 'user', content: 'x' },
          { role: 'tool', tool_call_id: 'c', content: 'r' },
        ],
      }),
    ).toHaveLength(1);
  });
});

describe('a resume of the latest turns (max_turns)', () => {
  const turns = transcript(
    ['system', 'You plan trips.'],
    ['user', 'Find a train.'],
    ['assistant', 'Searching.', { tool_calls: [{ id: 'toolu_1', name: 'search', input: {} }] }],
    ['tool', 'Found one.', { tool_use_id: 'toolu_1' }],
    ['system', 'Be brief.'],
    ['assistant', 'The 07:58.'],
    ['user', 'Book it.'],
  );

  it('keeps every system turn and the last turns, in order', () => {
    expect(latestTurns(turns, 2).map((turn) => turn.content)).toEqual(['You plan trips.', 'Be brief.', 'The 07:58.', 'Book it.']);
    expect(latestTurns(turns, 100)).toEqual(turns);
  });

  it('resumes a cut inside a tool exchange as a list the providers accept: the result without its call is dropped', () => {
    const { repaired, anthropic, openai } = resume(latestTurns(turns, 3));
    expect(fired(repaired.repairs)).toMatchObject({ orphan_result_dropped: 1, boundary_inserted: 1 });
    expect(anthropic.system).toBe('You plan trips.\n\nBe brief.');
    expect(anthropic.messages.map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
    expect(anthropicProblems(anthropic)).toEqual([]);
    expect(openAIProblems(openai)).toEqual([]);
  });
});
