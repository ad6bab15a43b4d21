/**
 * Fixed-alphabet string checks by table lookup: about twice as fast as the equivalent regular
 * expression, which matters on paths that check every op's ids (journal reopen, relay pulls).
 */
export type Charset = Uint8Array;

export function charset(chars: string): Charset {
  const table = new Uint8Array(128);
  for (let i = 0; i < chars.length; i++) table[chars.charCodeAt(i)] = 1;
  return table;
}

export const LOWER_HEX = charset('0123456789abcdef');
export const BASE64URL = charset('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_');

/** True when `value` is a string of exactly `length` characters from `set`, after `prefix`. */
export function isCharsetString(value: unknown, set: Charset, length: number, prefix = ''): value is string {
  if (typeof value !== 'string' || value.length !== prefix.length + length || !value.startsWith(prefix)) return false;
  for (let i = prefix.length; i < value.length; i++) {
    if (set[value.charCodeAt(i)] !== 1) return false;
  }
  return true;
}
