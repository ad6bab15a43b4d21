import fc from 'fast-check';

/** One random change to a file's bytes: a flipped byte, a cut, or inserted garbage. */
export type Damage = { kind: 'flip' | 'cut' | 'insert'; at: number; bits: number; bytes: Uint8Array };

/** Damages at offsets up to `maxAt` (applied modulo the file's length). */
export function damages(maxAt: number): fc.Arbitrary<Damage[]> {
  const damage = fc.record({
    kind: fc.constantFrom('flip' as const, 'cut' as const, 'insert' as const),
    at: fc.nat(maxAt),
    bits: fc.integer({ min: 1, max: 255 }),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }),
  });
  return fc.array(damage, { minLength: 1, maxLength: 3 });
}

export function applyDamage(original: Buffer, damage: Damage): Buffer {
  const at = damage.at % (original.length + 1);
  if (damage.kind === 'cut') return original.subarray(0, at);
  if (damage.kind === 'insert') return Buffer.concat([original.subarray(0, at), damage.bytes, original.subarray(at)]);
  const bytes = Buffer.from(original);
  if (at < bytes.length) bytes[at] = bytes[at]! ^ damage.bits;
  return bytes;
}
