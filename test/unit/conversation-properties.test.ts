import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatFor, RESUME_FORMATS, type ResumeFormat } from '../../src/conversation/provider-format.js';
import { repair } from '../../src/conversation/repair.js';
import { turnOf, type Turn } from '../../src/conversation/turn.js';
import { FoldState } from '../../src/fold/fold-state.js';
import type { OpRecord } from '../../src/oplog/op-record.js';
import type { JsonObject } from '../../src/util/json.js';
import { redeliver } from '../helpers/op-sets.js';
import { anthropicProblems, openAIProblems, textsOf } from '../helpers/provider-rules.js';
import { coreCrypto, TestDevice } from '../helpers/test-device.js';

/**
 * Random conversations written by two devices at once (their clocks interleave and tie), with
 * tool calls made on one device and answered on either, over a small id pool so that duplicate
 * and orphan ids are common. Delivery then drops, duplicates, reorders and truncates turns.
 */
type Action =
  | { kind: 'user' | 'assistant' | 'system'; device: number; advance: number; text: number }
  | { kind: 'calls'; device: number; advance: number; text: number; ids: number[] }
  | { kind: 'result'; device: number; advance: number; text: number; id: number };

const TEXTS = ['Hello', 'Can you check the build?', '', '  ', 'Done.\n', 'Let me look.', 'ok', 'Thanks!'];
const device = fc.integer({ min: 0, max: 1 });
const advance = fc.integer({ min: 0, max: 3 });
const text = fc.integer({ min: 0, max: TEXTS.length - 1 });

const action: fc.Arbitrary<Action> = fc.oneof(
  fc.record({ kind: fc.constantFrom('user' as const, 'assistant' as const, 'system' as const), device, advance, text }),
  fc.record({
    kind: fc.constant('calls' as const),
    device,
    advance,
    text,
    ids: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 3 }),
  }),
  fc.record({ kind: fc.constant('result' as const), device, advance, text, id: fc.integer({ min: 0, max: 6 }) }),
);

interface Delivery {
  readonly dropped: number[];
  readonly keepFrom: number;
  readonly keepUntil: number;
  readonly seed: number;
}

const delivery: fc.Arbitrary<Delivery> = fc.record({
  dropped: fc.array(fc.nat(), { maxLength: 4 }),
  keepFrom: fc.nat({ max: 5 }),
  keepUntil: fc.nat({ max: 5 }),
  seed: fc.integer(),
});

function write(actions: readonly Action[]): OpRecord[] {
  const walls = [5_000, 5_000];
  const devices = [new TestDevice('laptop', 1, () => walls[0]!), new TestDevice('desktop', 2, () => walls[1]!)];
  return actions.map((a) => {
    walls[a.device]! += a.advance;
    const content = TEXTS[a.text]!;
    let payload: JsonObject;
    switch (a.kind) {
      case 'calls':
        payload = { role: 'assistant', content, tool_calls: a.ids.map((id) => ({ id: `call_${id}`, name: 'run_tests', input: { id } })) };
        break;
      case 'result':
        payload = { role: 'tool', content: `result ${a.id}`, tool_use_id: `call_${a.id}` };
        break;
      default:
        payload = { role: a.kind, content };
    }
    return devices[a.device]!.op('conversation', { conversation_id: 'chat', timestamp: walls[a.device]!, ...payload });
  });
}

/** Loses some turns: a few at random, some at the start and some at the end of the ordered set. */
function deliver(ops: readonly OpRecord[], d: Delivery): OpRecord[] {
  const lost = new Set(d.dropped.map((n) => n % Math.max(1, ops.length)));
  const kept = ops.filter((_, i) => !lost.has(i));
  return kept.slice(Math.min(d.keepFrom, kept.length), Math.max(Math.min(d.keepFrom, kept.length), kept.length - d.keepUntil));
}

function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

/** One device: folds what it received, in the order it received it, and reads the transcript. */
function deviceTranscript(received: readonly OpRecord[]): Turn[] {
  const state = new FoldState(coreCrypto);
  for (const op of received) state.apply(op);
  return state.conversation('chat').map(turnOf);
}

function resumed(turns: readonly Turn[], format: ResumeFormat) {
  return formatFor(format, repair(turns));
}

describe('resume properties over two devices writing one conversation, delivered badly', () => {
  it('is provider-valid, never repeats a tool-call id, keeps every user and assistant text, and is identical on every device', () => {
    fc.assert(
      fc.property(fc.array(action, { minLength: 0, maxLength: 40 }), delivery, (actions, d) => {
        const delivered = deliver(write(actions), d);
        // Two devices that hold the same op-set after convergence, received in different orders, with repeats.
        const onA = deviceTranscript(redeliver(delivered, random(d.seed)));
        const onB = deviceTranscript(redeliver(delivered, random(d.seed ^ 0x5bd1e995)));
        expect(onB).toEqual(onA);

        for (const format of RESUME_FORMATS) {
          const request = resumed(onA, format);
          expect(resumed(onB, format)).toEqual(request);
          expect(format === 'anthropic' ? anthropicProblems(request) : openAIProblems(request)).toEqual([]);

          const ids = request.messages.flatMap((m) => callIds(m));
          expect(new Set(ids).size).toBe(ids.length);

          // Every call answered in the transcript carries its first recorded result.
          const called = new Set(onA.flatMap((t) => (t.tool_calls ?? []).map((c) => c.id)));
          const firstResult = new Map<string, string>();
          for (const t of onA)
            if (t.role === 'tool' && called.has(t.tool_use_id!) && !firstResult.has(t.tool_use_id!))
              firstResult.set(t.tool_use_id!, t.content);
          expect(resultsOf(request.messages)).toEqual(
            new Map([...called].map((id) => [id, firstResult.get(id) ?? expect.stringMatching(/interrupted/)])),
          );

          const out = textsOf(request.messages);
          for (const role of ['user', 'assistant'] as const) {
            const expected = onA.filter((t) => t.role === role && t.content.trim() !== '').map((t) => t.content);
            expect(containsAll(out[role], expected, format === 'anthropic')).toBe(true);
          }
        }
      }),
      { numRuns: 400 },
    );
  });
});

function callIds(message: JsonObject): string[] {
  if (Array.isArray(message.tool_calls)) return (message.tool_calls as JsonObject[]).map((c) => c.id as string);
  if (Array.isArray(message.content))
    return (message.content as JsonObject[]).filter((b) => b.type === 'tool_use').map((b) => b.id as string);
  return [];
}

function resultsOf(messages: readonly JsonObject[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const m of messages) {
    if (m.role === 'tool') out.set(m.tool_call_id as string, m.content);
    if (m.role === 'user' && Array.isArray(m.content)) {
      for (const b of m.content as JsonObject[]) if (b.type === 'tool_result') out.set(b.tool_use_id as string, b.content ?? '');
    }
  }
  return out;
}

/** Multiset inclusion, in order; Anthropic may trim the trailing whitespace of the final text. */
function containsAll(actual: readonly string[], expected: readonly string[], trimmed: boolean): boolean {
  let at = 0;
  for (const want of expected) {
    while (at < actual.length && actual[at] !== want && !(trimmed && at === actual.length - 1 && actual[at] === want.trimEnd())) at++;
    if (at === actual.length) return false;
    at++;
  }
  return true;
}
