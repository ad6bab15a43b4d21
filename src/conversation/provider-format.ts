import type { JsonObject } from '../util/json.js';
import type { Repaired, ToolResult } from './repair.js';

/**
 * A repaired conversation in each provider's request shape (proposals/conversation.md lists the
 * constraints each one meets). Pure formatting: every decision was made by `repair`.
 */
export const RESUME_FORMATS = ['anthropic', 'openai'] as const;
export type ResumeFormat = (typeof RESUME_FORMATS)[number];

export interface ProviderRequest {
  /** Anthropic: the top-level `system` parameter (absent when there is none). */
  readonly system?: string;
  readonly messages: JsonObject[];
}

export function formatFor(format: ResumeFormat, repaired: Repaired): ProviderRequest {
  return format === 'anthropic' ? toAnthropic(repaired) : toOpenAI(repaired);
}

/**
 * Anthropic Messages: `system` apart; alternating user/assistant messages. A message of one text
 * is a plain string; anything else is a list of content blocks (tool results first).
 */
export function toAnthropic({ system, messages }: Repaired): ProviderRequest {
  const out: JsonObject[] = new Array<JsonObject>(messages.length);
  for (let i = 0; i < messages.length; i++) {
    const message = messages[i]!;
    const texts = message.texts;
    if (message.role === 'user') {
      if (message.results.length === 0 && texts.length === 1) {
        out[i] = { role: 'user', content: texts[0]! };
        continue;
      }
      const blocks = message.results.map(anthropicResult);
      for (const text of texts) blocks.push(textBlock(text));
      out[i] = { role: 'user', content: blocks };
    } else {
      if (message.calls.length === 0 && texts.length === 1) {
        out[i] = { role: 'assistant', content: texts[0]! };
        continue;
      }
      const blocks = texts.map(textBlock);
      for (const call of message.calls) blocks.push({ type: 'tool_use', id: call.id, name: call.name, input: call.input });
      out[i] = { role: 'assistant', content: blocks };
    }
  }
  trimFinalAssistant(out);
  return system.length > 0 ? { system: system.join('\n\n'), messages: out } : { messages: out };
}

/** The API refuses a final assistant message that ends in whitespace (it reads it as a prefill). */
function trimFinalAssistant(messages: JsonObject[]): void {
  const last = messages.at(-1);
  if (last?.role !== 'assistant') return;
  if (typeof last.content === 'string') {
    messages[messages.length - 1] = { role: 'assistant', content: last.content.trimEnd() };
    return;
  }
  const blocks = last.content as JsonObject[];
  const tail = blocks.at(-1)!;
  if (tail.type === 'text') blocks[blocks.length - 1] = textBlock((tail.text as string).trimEnd());
}

/** OpenAI Chat Completions: one leading system message; tool results as `tool` messages. */
export function toOpenAI({ system, messages }: Repaired): ProviderRequest {
  const out: JsonObject[] = system.length > 0 ? [{ role: 'system', content: system.join('\n\n') }] : [];
  for (const message of messages) {
    if (message.role === 'user') {
      for (const result of message.results) out.push({ role: 'tool', tool_call_id: result.tool_use_id, content: result.content });
      if (message.texts.length > 0) out.push({ role: 'user', content: openAIText(message.texts) });
      continue;
    }
    const assistant: JsonObject = { role: 'assistant', content: message.texts.length > 0 ? openAIText(message.texts) : null };
    if (message.calls.length > 0) {
      assistant.tool_calls = message.calls.map((call) => ({
        id: call.id,
        type: 'function',
        function: { name: call.name, arguments: JSON.stringify(call.input) },
      }));
    }
    out.push(assistant);
  }
  return { messages: out };
}

function textBlock(text: string): JsonObject {
  return { type: 'text', text };
}

function anthropicResult(result: ToolResult): JsonObject {
  const block: JsonObject = { type: 'tool_result', tool_use_id: result.tool_use_id };
  if (result.content.length > 0) block.content = result.content;
  if (result.is_error) block.is_error = true;
  return block;
}

/** One text is a plain string; merged texts stay separate as content parts. */
function openAIText(texts: readonly string[]): string | JsonObject[] {
  return texts.length === 1 ? texts[0]! : texts.map(textBlock);
}
