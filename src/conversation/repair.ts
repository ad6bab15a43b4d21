import type { ToolCall, Turn } from './turn.js';

/** What the repair reads of a turn (a folded payload has exactly these fields). */
export type TurnFields = Pick<Turn, 'role' | 'content' | 'tool_calls' | 'tool_use_id' | 'is_error'>;

/**
 * The resume repair (proposals/conversation.md §Repair rules): turns in (hlc, op_id) order in, a
 * message list every provider accepts out. A pure function of the turn list, so devices that
 * folded the same op-set resume identically. Each rule counts how often it fired.
 *
 * | rule                     | what it does                                                               |
 * |--------------------------|----------------------------------------------------------------------------|
 * | system_hoisted           | system turns become the system prompt, in order, wherever they were        |
 * | blank_dropped            | a turn with only whitespace and no tool calls adds nothing                 |
 * | duplicate_call_dropped   | a tool call whose id an earlier call already used is dropped               |
 * | orphan_result_dropped    | a tool result whose id matches no call in the transcript is dropped        |
 * | duplicate_result_dropped | a second result for the same call is dropped (the first one wins)          |
 * | result_moved             | a late or out-of-order result is placed right after its call               |
 * | dangling_call_completed  | a call with no result gets a synthetic error result saying it was cut off  |
 * | same_role_merged         | consecutive user (or assistant) turns become one message, in order         |
 * | boundary_inserted        | a list that would start with an assistant message gets a user turn first   |
 *
 * An assistant turn never merges into a message that made tool calls: the calls' results stand
 * between them.
 */
export const REPAIR_RULES = [
  'system_hoisted',
  'blank_dropped',
  'duplicate_call_dropped',
  'orphan_result_dropped',
  'duplicate_result_dropped',
  'result_moved',
  'dangling_call_completed',
  'same_role_merged',
  'boundary_inserted',
] as const;
export type RepairRule = (typeof REPAIR_RULES)[number];
export type RepairCounts = Record<RepairRule, number>;

/** The synthetic result of a call that never got one. */
export const INTERRUPTED_RESULT = 'The tool call was interrupted before it returned a result; it may or may not have taken effect.';
/** The user turn put before a list that would otherwise start with the assistant. */
export const BOUNDARY_TEXT = '(The conversation continues from here.)';

export interface ToolResult {
  readonly tool_use_id: string;
  readonly content: string;
  readonly is_error: boolean;
}

/** A user message: the results of the previous assistant message's calls first, then text. */
export interface UserMessage {
  readonly role: 'user';
  results: readonly ToolResult[];
  readonly texts: string[];
}

export interface AssistantMessage {
  readonly role: 'assistant';
  readonly texts: string[];
  calls: readonly ToolCall[];
}

/** Shared empty lists: most messages have no calls or results, and a long resume makes many. */
const NO_RESULTS: readonly ToolResult[] = Object.freeze([]);
const NO_CALLS: readonly ToolCall[] = Object.freeze([]);

export type Message = UserMessage | AssistantMessage;

export interface Repaired {
  readonly system: readonly string[];
  readonly messages: readonly Message[];
  readonly repairs: RepairCounts;
}

/**
 * The turns a resume of the latest `max` turns repairs: every system turn, wherever it is (they
 * make the system prompt), and the last `max` other turns, in order. A cut that falls inside a
 * tool exchange leaves a result without its call, which the repair drops like any orphan.
 */
export function latestTurns<T extends Pick<TurnFields, 'role'>>(turns: readonly T[], max: number): T[] {
  let kept = 0;
  let start = turns.length;
  while (start > 0 && (kept < max || turns[start - 1]!.role === 'system')) {
    start--;
    if (turns[start]!.role !== 'system') kept++;
  }
  return [...turns.slice(0, start).filter((turn) => turn.role === 'system'), ...turns.slice(start)];
}

export function repair(turns: readonly TurnFields[]): Repaired {
  const repairs = Object.fromEntries(REPAIR_RULES.map((rule) => [rule, 0])) as RepairCounts;
  const system: string[] = [];
  const messages: Message[] = [];
  /** Call id → index of the turn that first used it; later uses are duplicates. */
  const callAt = new Map<string, number>();
  /** Tool turns, with the index of the last non-tool turn before each. */
  const toolTurns: Array<{ turn: TurnFields; after: number }> = [];
  let lastSpeaker = -1;
  let spoken = false;
  for (let index = 0; index < turns.length; index++) {
    const turn = turns[index]!;
    const role = turn.role;
    if (role === 'tool') {
      toolTurns.push({ turn, after: lastSpeaker });
      continue;
    }
    lastSpeaker = index;
    const text = isBlank(turn.content) ? null : turn.content;
    if (role === 'system') {
      if (text === null) {
        repairs.blank_dropped++;
      } else {
        system.push(text);
        if (spoken) repairs.system_hoisted++;
      }
      continue;
    }
    spoken = true;
    const last = messages.length > 0 ? messages[messages.length - 1] : undefined;
    if (role === 'user') {
      if (text === null) {
        repairs.blank_dropped++;
      } else if (last?.role === 'user') {
        last.texts.push(text);
        repairs.same_role_merged++;
      } else {
        messages.push({ role: 'user', results: NO_RESULTS, texts: [text] });
      }
      continue;
    }
    const own = turn.tool_calls ? ownCalls(turn.tool_calls, index, callAt, repairs) : NO_CALLS;
    if (text === null && own.length === 0) {
      repairs.blank_dropped++;
    } else if (last?.role === 'assistant' && last.calls.length === 0) {
      // After a message with calls come their results, so a later assistant turn starts anew.
      if (text !== null) last.texts.push(text);
      last.calls = own;
      repairs.same_role_merged++;
    } else {
      messages.push({ role: 'assistant', texts: text === null ? [] : [text], calls: own });
    }
  }
  const results = firstResults(toolTurns, callAt, repairs);

  const out = withResults(messages, results, repairs);
  return { system, messages: out, repairs };
}

/** The messages with every call's result right after the message that made it, in call order (a call without one is completed as interrupted). */
function withResults(messages: Message[], results: ReadonlyMap<string, ToolResult>, repairs: RepairCounts): Message[] {
  const out: Message[] = [];
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i]!;
    out.push(message);
    if (message.role !== 'assistant' || message.calls.length === 0) continue;
    const answers = message.calls.map((call): ToolResult => {
      const result = results.get(call.id);
      if (result) return result;
      repairs.dangling_call_completed++;
      return { tool_use_id: call.id, content: INTERRUPTED_RESULT, is_error: true };
    });
    const next = messages[i + 1];
    if (next?.role === 'user') next.results = answers;
    else out.push({ role: 'user', results: answers, texts: [] });
  }
  if (out[0]?.role === 'assistant') {
    out.unshift({ role: 'user', results: NO_RESULTS, texts: [BOUNDARY_TEXT] });
    repairs.boundary_inserted++;
  }
  return out;
}

/** The calls of a turn whose ids no earlier call used; records the new ids in `callAt`. */
function ownCalls(calls: readonly ToolCall[], index: number, callAt: Map<string, number>, repairs: RepairCounts): ToolCall[] {
  const own: ToolCall[] = [];
  for (const call of calls) {
    if (callAt.has(call.id)) {
      repairs.duplicate_call_dropped++;
    } else {
      callAt.set(call.id, index);
      own.push(call);
    }
  }
  return own;
}

/**
 * Call id → its first result. A result is in place when only tool turns stand between it and
 * the turn that made its call; anything else (a late result, or one before its call) is moved.
 */
function firstResults(
  toolTurns: ReadonlyArray<{ turn: TurnFields; after: number }>,
  callAt: ReadonlyMap<string, number>,
  repairs: RepairCounts,
): Map<string, ToolResult> {
  const results = new Map<string, ToolResult>();
  for (const { turn, after } of toolTurns) {
    const id = turn.tool_use_id!;
    const at = callAt.get(id);
    if (at === undefined) {
      repairs.orphan_result_dropped++;
    } else if (results.has(id)) {
      repairs.duplicate_result_dropped++;
    } else {
      if (at !== after) repairs.result_moved++;
      results.set(id, { tool_use_id: id, content: turn.content, is_error: turn.is_error === true });
    }
  }
  return results;
}

const NON_SPACE = /\S/;

function isBlank(text: string): boolean {
  return !NON_SPACE.test(text);
}
