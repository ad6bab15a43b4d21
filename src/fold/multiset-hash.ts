/**
 * An order-independent hash of a multiset of 256-bit digests: their sum modulo 2^256
 * (MSet-Add-Hash, Clarke et al. 2003). Inserting or removing one digest costs a 256-bit add,
 * so the state hash follows each fold step without re-hashing the state. Digests are SHA-256
 * outputs (op ids, or hashes of derived records), which is what makes sums collide only by chance.
 */
export class MultisetHash {
  /** Eight 32-bit limbs, most significant first (the order of the hex digits). */
  private readonly limbs = new Uint32Array(8);

  /** Adds a digest given as 64 lowercase hex digits starting at `offset` of `hex`. */
  add(hex: string, offset = 0): void {
    let carry = 0;
    for (let i = 7; i >= 0; i--) {
      const sum = this.limbs[i]! + limbAt(hex, offset + i * 8) + carry;
      this.limbs[i] = sum;
      carry = sum > 0xffffffff ? 1 : 0;
    }
  }

  remove(hex: string, offset = 0): void {
    let borrow = 0;
    for (let i = 7; i >= 0; i--) {
      const diff = this.limbs[i]! - limbAt(hex, offset + i * 8) - borrow;
      this.limbs[i] = diff;
      borrow = diff < 0 ? 1 : 0;
    }
  }

  hex(): string {
    let out = '';
    for (const limb of this.limbs) out += limb.toString(16).padStart(8, '0');
    return out;
  }
}

/** The 32-bit value of 8 hex digits at `at`, read without allocating (this runs once per folded op). */
function limbAt(hex: string, at: number): number {
  let value = 0;
  for (let i = at; i < at + 8; i++) {
    const c = hex.charCodeAt(i);
    value = value * 16 + (c <= 57 ? c - 48 : c - 87);
  }
  return value;
}
