/** Small, allocation-light helpers for deterministic ordering. */

/** Three-way comparison of two strings by UTF-16 code units (the order JCS and `sort()` use). */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Three-way comparison of two numbers. */
export function compareNumbers(a: number, b: number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
