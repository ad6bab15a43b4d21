import { formatFor, RESUME_FORMATS } from '../conversation/provider-format.js';
import { latestTurns, repair, type TurnFields } from '../conversation/repair.js';
import { turnOf } from '../conversation/turn.js';
import { DEFAULT_CONVERSATION, payloadProblem, ROLES } from '../fold/payload-rules.js';
import { parseConversationId } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import type { Session } from '../session/session.js';
import { jsonDepth, type JsonObject, type JsonValue } from '../util/json.js';
import { LIMITS } from '../util/limits.js';
import { defineMethod, resultObject } from './method.js';
import { integer, nameId, object, oneOf, optional, parsed, required, string } from './schema.js';

/**
 * Conversations (proposals/conversation.md §Methods): record turns, read the transcript in
 * (hlc, op_id) order, and resume as a provider-valid message list.
 */
const conversationId = nameId(parseConversationId);
/** Turn fields pass through as given; the fold's payload rules judge them, so the RPC and peers agree. */
const anyValue = (json: JsonObject) => parsed(json, (value) => value as JsonValue);
const toolCall = {
  type: 'object',
  properties: { id: { type: 'string' }, name: { type: 'string' }, input: { type: 'object' } },
  required: ['id', 'name', 'input'],
};

export function conversationMethods(session: Session) {
  return [
    defineMethod({
      name: 'sync.record_turn',
      summary: 'Records one turn of a conversation; answers once it is durable. A malformed turn is refused and nothing is written.',
      params: object({
        conversation_id: optional(conversationId, `the conversation (default "${DEFAULT_CONVERSATION}")`),
        role: required(anyValue({ type: 'string', enum: [...ROLES] }), 'who speaks'),
        content: required(anyValue({ type: 'string' }), "the text of the turn (a tool turn: the tool's result)"),
        tool_calls: optional(anyValue({ type: 'array', items: toolCall }), 'assistant turns: the tools it calls, [{id, name, input}]'),
        tool_use_id: optional(anyValue({ type: 'string' }), 'tool turns: the id of the call this result answers'),
        is_error: optional(anyValue({ type: 'boolean' }), 'tool turns: the tool failed'),
        timestamp: optional(
          anyValue({ oneOf: [{ type: 'integer' }, { type: 'string', format: 'date-time' }] }),
          'when the turn happened: epoch ms or ISO 8601 (default: now)',
        ),
      }),
      result: resultObject({ op_id: { type: 'string' }, seq: { type: 'integer' }, hlc: { type: 'object' } }),
      errors: ['invalid_turn', 'payload_too_large', 'journal_failed'],
      handler: (p) => {
        const payload: JsonObject = {
          conversation_id: p.conversation_id ?? DEFAULT_CONVERSATION,
          role: p.role,
          content: p.content,
          timestamp: p.timestamp ?? Date.now(),
        };
        for (const field of ['tool_calls', 'tool_use_id', 'is_error'] as const) if (p[field] !== undefined) payload[field] = p[field];
        const problem =
          payloadProblem('conversation', 'personal', payload) ??
          (jsonDepth(payload) > LIMITS.maxJsonDepth ? `tool inputs are nested deeper than ${LIMITS.maxJsonDepth} levels` : null);
        if (problem !== null) throw new OpsyncError('invalid_turn', `The turn was not recorded: ${problem}.`, { reason: problem });
        return session.append({ surface: 'conversation', payload, scope: 'personal' });
      },
    }),
    defineMethod({
      name: 'sync.transcript',
      summary: "A page of a conversation's turns in (hlc, op_id) order: the same on every device that folded the same ops.",
      params: object({
        conversation_id: optional(conversationId, `the conversation (default "${DEFAULT_CONVERSATION}")`),
        after: optional(string({ maxLength: LIMITS.maxIdLength }), 'the `next` cursor of the previous page'),
        limit: optional(integer({ min: 1, max: 10_000 }), 'turns per page (default 1000)'),
      }),
      result: resultObject({
        conversation_id: { type: 'string' },
        turns: { type: 'array' },
        next: { type: ['string', 'null'] },
        total: { type: 'integer' },
      }),
      handler: (p) => {
        const id = p.conversation_id ?? DEFAULT_CONVERSATION;
        const page = session.state.conversationPage(id, p.after ?? null, p.limit ?? 1000);
        return { conversation_id: id, turns: page.items.map(turnOf), next: page.next, total: session.state.conversation(id).length };
      },
    }),
    defineMethod({
      name: 'sync.resume',
      summary: 'The conversation as a message list the provider accepts, repaired by the rules of proposals/conversation.md.',
      params: object({
        conversation_id: optional(conversationId, `the conversation (default "${DEFAULT_CONVERSATION}")`),
        format: optional(oneOf(RESUME_FORMATS), 'anthropic (Messages API, default) or openai (Chat Completions)'),
        max_turns: optional(
          integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
          'only the latest this many turns, with every system turn (default: all)',
        ),
      }),
      result: resultObject({
        conversation_id: { type: 'string' },
        format: { type: 'string' },
        system: { type: 'string', description: 'anthropic: the system parameter, when there is one' },
        messages: { type: 'array' },
        turns: { type: 'integer', description: 'turns the messages were made from' },
        omitted_turns: { type: 'integer', description: 'earlier turns left out by max_turns' },
        repairs: { type: 'object', description: 'how often each repair rule fired' },
      }),
      handler: (p) => {
        const id = p.conversation_id ?? DEFAULT_CONVERSATION;
        const format = p.format ?? 'anthropic';
        const records = session.state.conversation(id);
        // The folded payloads carry exactly the fields the repair reads (checked by the fold's rules).
        const all = records.map((record) => record.payload as unknown as TurnFields);
        const turns = p.max_turns === undefined ? all : latestTurns(all, p.max_turns);
        const repaired = repair(turns);
        return {
          conversation_id: id,
          format,
          ...formatFor(format, repaired),
          turns: turns.length,
          omitted_turns: all.length - turns.length,
          repairs: repaired.repairs,
        };
      },
    }),
    defineMethod({
      name: 'sync.conversations',
      summary: 'Every conversation this device holds, with its turn count and latest turn.',
      params: object({}),
      result: resultObject({ conversations: { type: 'array' } }),
      handler: () => ({
        conversations: session.state.conversationIds().map((id) => {
          const turns = session.state.conversation(id);
          const last = turns.at(-1)!;
          return { conversation_id: id, turns: turns.length, last_op_id: last.op_id, last_hlc: last.hlc };
        }),
      }),
    }),
  ];
}
