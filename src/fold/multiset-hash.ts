/**
 * An order-independent hash of a multiset of 256-bit digests: their sum modulo 2^256
 * (MSet-Add-Hash, Clarke et al. 2003). Inserting or removing one digest costs a 256-bit add,
 * so the state hash follows each fold step without re-hashing the state. Digests are SHA-256
 * outputs (op ids, or hashes of derived records), which is what makes sums collide only by chance.
 */
export class MultisetHash {
  /** Eight 32-bit limbs, most significant first (the order of the hex digits). */
  private readonly limbs = new Uint32Array(8);

  add(hex64: string): void {
    let carry = 0;
    for (let i = 7; i >= 0; i--) {
      const sum = this.limbs[i]! + Number.parseInt(hex64.slice(i * 8, i * 8 + 8), 16) + carry;
      this.limbs[i] = sum;
      carry = sum > 0xffffffff ? 1 : 0;
    }
  }

  remove(hex64: string): void {
    let borrow = 0;
    for (let i = 7; i >= 0; i--) {
      const diff = this.limbs[i]! - Number.parseInt(hex64.slice(i * 8, i * 8 + 8), 16) - borrow;
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
