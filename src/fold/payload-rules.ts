import { isEpoch, isNameId } from '../oplog/ids.js';
import type { Scope } from '../oplog/scope.js';
import { tierOf, type Surface } from '../oplog/surface.js';
import { isJsonObject, type JsonObject } from '../util/json.js';
import { LIMITS } from '../util/limits.js';

/**
 * What a payload must carry for its surface (proposals/fold.md §Payloads). Appends that break a
 * rule are refused with the reason; ops from peers that break one are counted and skipped. The
 * rules are a pure function of the op, so every device skips the same ops.
 */
export const ROLES = ['user', 'assistant', 'tool', 'system'] as const;
export type Role = (typeof ROLES)[number];
export const INTENT_STATUSES = ['pending', 'committed', 'failed'] as const;
export type IntentStatus = (typeof INTENT_STATUSES)[number];

/** The conversation a turn without `conversation_id` belongs to. */
export const DEFAULT_CONVERSATION = 'default';

const MAX_TOOL_CALLS = 128;

/**
 * Tool-call ids and tool names as both providers accept them (proposals/conversation.md):
 * Anthropic wants ids of `[A-Za-z0-9_-]`, OpenAI at most 40 characters; both want names of
 * 1 to 64 `[A-Za-z0-9_-]`. Checked when a turn is recorded, so a resume never fails on them.
 */
const TOOL_CALL_ID = /^[A-Za-z0-9_-]{1,40}$/;
const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Returns why `payload` is not acceptable on `surface`, or null when it is. */
export function payloadProblem(surface: Surface, scope: Scope, payload: JsonObject): string | null {
  switch (tierOf(surface)) {
    case 'set':
      return recordIdProblem(payload);
    case 'lww':
      return (
        recordIdProblem(payload) ??
        (payload.deleted !== undefined && typeof payload.deleted !== 'boolean' ? 'deleted must be a boolean' : null)
      );
    case 'events':
      return surface === 'conversation' ? turnProblem(payload) : null;
    case 'intent':
      return intentProblem(scope, payload);
  }
}

function recordIdProblem(payload: JsonObject): string | null {
  const id = payload.id;
  if (typeof id !== 'string' || id.length === 0) return 'payload.id is required and must be a non-empty string';
  if (id.length > LIMITS.maxRecordKeyLength) return `payload.id is longer than ${LIMITS.maxRecordKeyLength} characters`;
  return null;
}

function turnProblem(payload: JsonObject): string | null {
  const { conversation_id, role, content, timestamp, tool_calls, tool_use_id, is_error } = payload;
  if (conversation_id !== undefined && !isNameId(conversation_id)) return 'conversation_id is not a valid id';
  if (!ROLES.includes(role as Role)) return `role must be one of ${ROLES.join(', ')}`;
  if (typeof content !== 'string') return 'content is required and must be a string';
  if (!isTimestamp(timestamp)) return 'timestamp is required: epoch milliseconds or an ISO 8601 string';
  if (role === 'tool') {
    if (tool_use_id === undefined) return 'a tool turn needs tool_use_id, the id of the call it answers';
    if (!isToolCallId(tool_use_id)) return 'tool_use_id must be 1 to 40 letters, digits, "_" or "-"';
    if (is_error !== undefined && typeof is_error !== 'boolean') return 'is_error must be a boolean';
  } else if (tool_use_id !== undefined || is_error !== undefined) {
    return 'tool_use_id and is_error belong only on tool turns';
  }
  if (tool_calls !== undefined) {
    if (role !== 'assistant') return 'tool_calls belong only on assistant turns';
    return toolCallsProblem(tool_calls);
  }
  return null;
}

function toolCallsProblem(calls: unknown): string | null {
  if (!Array.isArray(calls)) return 'tool_calls must be an array of {id, name, input}';
  if (calls.length > MAX_TOOL_CALLS) return `at most ${MAX_TOOL_CALLS} tool calls per turn`;
  for (const [index, call] of calls.entries()) {
    if (!isJsonObject(call)) return `tool_calls[${index}] must be an object {id, name, input}`;
    if (!isToolCallId(call.id)) return `tool_calls[${index}].id must be 1 to 40 letters, digits, "_" or "-"`;
    if (typeof call.name !== 'string' || !TOOL_NAME.test(call.name))
      return `tool_calls[${index}].name must be 1 to 64 letters, digits, "_" or "-"`;
    if (!isJsonObject(call.input)) return `tool_calls[${index}].input must be an object`;
    const extra = Object.keys(call).filter((key) => key !== 'id' && key !== 'name' && key !== 'input');
    if (extra.length > 0) return `tool_calls[${index}] has unknown fields: ${extra.join(', ')}`;
  }
  return null;
}

function isToolCallId(value: unknown): value is string {
  return typeof value === 'string' && TOOL_CALL_ID.test(value);
}

function intentProblem(scope: Scope, payload: JsonObject): string | null {
  if (scope !== 'personal') return 'intents are personal-scope only: leases fence the devices of one user';
  if (!isNameId(payload.id)) return 'payload.id (the run id) is required and must be a valid id';
  if (!isNameId(payload.agent_id)) return 'payload.agent_id is required and must be a valid id';
  if (!isEpoch(payload.epoch)) return 'payload.epoch is required and must be a non-negative integer';
  if (!INTENT_STATUSES.includes(payload.status as IntentStatus)) return `payload.status must be one of ${INTENT_STATUSES.join(', ')}`;
  return null;
}

function isTimestamp(value: unknown): boolean {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0;
  return typeof value === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/.test(value);
}
