/** JSON value types and the structural checks every untrusted JSON input goes through. */

export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Depth of a parsed JSON value (a scalar is depth 0, `{}` and `[]` are depth 1).
 * Iterative, so a hostile 100 000-level document cannot overflow the stack.
 */
export function jsonDepth(value: unknown): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    const inner = depth + 1;
    if (inner > max) max = inner;
    const children = Array.isArray(node) ? node : Object.values(node);
    for (const child of children) {
      if (typeof child === 'object' && child !== null) stack.push([child, inner]);
    }
  }
  return max;
}

/**
 * Nesting depth of raw JSON text, counted before parsing so that JSON.parse never sees a
 * document nested deeper than `limit` (it recurses natively). Brackets inside strings do not count.
 * Returns the first depth that exceeds `limit`, or the maximum depth when it stays within.
 */
export function textDepthExceeds(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > limit) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/** Parses untrusted JSON text; a syntax error or a nesting deeper than `maxDepth` is a value, not a throw. */
export function parseJsonText(
  text: string,
  maxDepth: number,
): { ok: true; value: JsonValue } | { ok: false; reason: 'syntax' | 'depth'; message: string } {
  if (textDepthExceeds(text, maxDepth)) {
    return { ok: false, reason: 'depth', message: `JSON is nested deeper than ${maxDepth} levels` };
  }
  try {
    return { ok: true, value: JSON.parse(text) as JsonValue };
  } catch (e) {
    return { ok: false, reason: 'syntax', message: (e as Error).message };
  }
}
