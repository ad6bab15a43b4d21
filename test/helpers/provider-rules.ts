/**
 * Test oracle: the request constraints of each provider's API that a resumed conversation must
 * meet, written independently of the repair code. Each function returns the violations found.
 *
 * Anthropic Messages API: roles user/assistant alternate, starting with user; content is a
 * non-empty string or a non-empty list of blocks; text blocks hold non-whitespace text; every tool_use id matches [A-Za-z0-9_-]+ and is
 * unique in the request; tool names match [A-Za-z0-9_-]{1,64}; the message after an assistant
 * message with tool_use blocks is a user message whose tool_result blocks come first and answer
 * exactly those ids, once each; no tool_result appears anywhere else; a final assistant message
 * does not end in whitespace; `system`, when present, is a non-empty string.
 *
 * OpenAI Chat Completions: at most one system message, first; then the first message is from the
 * user; an assistant message with tool_calls is followed at once by one tool message per call id
 * (ids of at most 40 characters, unique in the request), and tool messages appear nowhere else;
 * function arguments are a JSON object text; an assistant message without tool_calls has content.
 */
type Msg = Record<string, unknown>;

const TOOL_ID = /^[A-Za-z0-9_-]+$/;
const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export function anthropicProblems(request: { system?: unknown; messages: unknown[] }): string[] {
  const problems: string[] = [];
  const messages = request.messages as Msg[];
  if (request.system !== undefined && (typeof request.system !== 'string' || request.system.trim() === ''))
    problems.push('system must be a non-empty string');
  const seen = new Set<string>();
  let pending: string[] = [];
  messages.forEach((message, i) => {
    const where = `messages[${i}]`;
    const expected = i % 2 === 0 ? 'user' : 'assistant';
    if (message.role !== expected) problems.push(`${where}: role ${String(message.role)}, expected ${expected}`);
    // A string is shorthand for one text block.
    const blocks = typeof message.content === 'string' ? [{ type: 'text', text: message.content }] : (message.content as Msg[]);
    if (!Array.isArray(blocks) || blocks.length === 0) {
      problems.push(`${where}: content must be a non-empty array of blocks`);
      return;
    }
    const answered: string[] = [];
    let textSeen = false;
    for (const block of blocks) {
      if (block.type === 'text') {
        textSeen = true;
        if (typeof block.text !== 'string' || block.text.trim() === '') problems.push(`${where}: empty text block`);
      } else if (block.type === 'tool_use') {
        if (message.role !== 'assistant') problems.push(`${where}: tool_use outside an assistant message`);
        const id = block.id as string;
        if (!TOOL_ID.test(id)) problems.push(`${where}: tool_use id ${id} has characters the API refuses`);
        if (seen.has(id)) problems.push(`${where}: tool_use id ${id} repeats`);
        seen.add(id);
        if (!TOOL_NAME.test(block.name as string)) problems.push(`${where}: tool name ${String(block.name)}`);
        if (typeof block.input !== 'object' || block.input === null || Array.isArray(block.input))
          problems.push(`${where}: tool input must be an object`);
      } else if (block.type === 'tool_result') {
        if (message.role !== 'user') problems.push(`${where}: tool_result outside a user message`);
        if (textSeen) problems.push(`${where}: tool_result after text`);
        answered.push(block.tool_use_id as string);
        if (block.content !== undefined && typeof block.content !== 'string') problems.push(`${where}: tool_result content`);
      } else {
        problems.push(`${where}: unknown block type ${String(block.type)}`);
      }
    }
    if (message.role === 'user') {
      const want = [...pending].sort().join(',');
      const got = [...answered].sort().join(',');
      if (want !== got) problems.push(`${where}: answers [${got}] but the previous assistant message called [${want}]`);
      if (new Set(answered).size !== answered.length) problems.push(`${where}: a call is answered twice`);
      pending = [];
    } else {
      pending = blocks.filter((b) => b.type === 'tool_use').map((b) => b.id as string);
    }
  });
  if (pending.length > 0) problems.push(`the last assistant message calls [${pending.join(',')}] with no result after it`);
  const last = messages.at(-1);
  if (last?.role === 'assistant') {
    const tail = typeof last.content === 'string' ? { type: 'text', text: last.content } : (last.content as Msg[]).at(-1);
    if (tail?.type === 'text' && /\s$/.test(tail.text as string)) problems.push('the final assistant message ends in whitespace');
  }
  return problems;
}

export function openAIProblems(request: { messages: unknown[] }): string[] {
  const problems: string[] = [];
  const messages = request.messages as Msg[];
  const seen = new Set<string>();
  let pending = new Set<string>();
  let firstSpeaker = true;
  messages.forEach((message, i) => {
    const where = `messages[${i}]`;
    if (message.role !== 'tool' && pending.size > 0) {
      problems.push(`${where}: calls [${[...pending].join(',')}] of the previous assistant message have no tool message`);
      pending = new Set();
    }
    switch (message.role) {
      case 'system':
        if (i !== 0) problems.push(`${where}: a system message after the start`);
        if (typeof message.content !== 'string' || message.content.trim() === '') problems.push(`${where}: empty system message`);
        return;
      case 'user':
        if (!hasText(message.content)) problems.push(`${where}: user message without text`);
        break;
      case 'assistant': {
        if (firstSpeaker) problems.push(`${where}: the first message after the system prompt must be from the user`);
        const calls = (message.tool_calls as Msg[] | undefined) ?? [];
        if (calls.length === 0 && !hasText(message.content))
          problems.push(`${where}: assistant message with neither content nor tool_calls`);
        if (message.content !== null && !hasText(message.content)) problems.push(`${where}: assistant content must be text or null`);
        for (const call of calls) {
          const id = call.id as string;
          const fn = call.function as Msg;
          if (typeof id !== 'string' || id.length === 0 || id.length > 40)
            problems.push(`${where}: tool call id ${String(id)} is not 1 to 40 characters`);
          if (seen.has(id)) problems.push(`${where}: tool call id ${id} repeats`);
          seen.add(id);
          if (call.type !== 'function' || !TOOL_NAME.test(fn.name as string))
            problems.push(`${where}: tool call must be a function with a valid name`);
          try {
            const args: unknown = JSON.parse(fn.arguments as string);
            if (typeof args !== 'object' || args === null || Array.isArray(args))
              problems.push(`${where}: arguments must be a JSON object`);
          } catch {
            problems.push(`${where}: arguments are not JSON`);
          }
          pending.add(id);
        }
        break;
      }
      case 'tool': {
        const id = message.tool_call_id as string;
        if (!pending.delete(id))
          problems.push(`${where}: tool message for ${id}, which the previous assistant message did not call (or already answered)`);
        if (typeof message.content !== 'string') problems.push(`${where}: tool content must be a string`);
        // A tool message keeps `pending` open for the rest of the group.
        return;
      }
      default:
        problems.push(`${where}: unknown role ${String(message.role)}`);
    }
    if (message.role === 'user' || message.role === 'assistant') firstSpeaker = false;
  });
  if (pending.size > 0) problems.push(`calls [${[...pending].join(',')}] have no tool message`);
  return problems;
}

function hasText(content: unknown): boolean {
  if (typeof content === 'string') return content.trim() !== '';
  return (
    Array.isArray(content) &&
    content.length > 0 &&
    content.every((part: Msg) => part.type === 'text' && typeof part.text === 'string' && part.text.trim() !== '')
  );
}

/** The user and assistant texts a request carries, in order, per role. */
export function textsOf(messages: unknown[]): { user: string[]; assistant: string[] } {
  const out = { user: [] as string[], assistant: [] as string[] };
  for (const message of messages as Msg[]) {
    if (message.role !== 'user' && message.role !== 'assistant') continue;
    const content = message.content;
    const texts =
      typeof content === 'string'
        ? [content]
        : Array.isArray(content)
          ? (content as Msg[]).filter((b) => b.type === 'text').map((b) => b.text as string)
          : [];
    out[message.role].push(...texts);
  }
  return out;
}
