import { describe, expect, it } from 'vitest';
import { verifyChain, type ChainErrorKind } from '../../src/oplog/chain.js';
import { opIdOf, type OpRecord } from '../../src/oplog/op-record.js';
import { coreCrypto, TestDevice } from '../helpers/test-device.js';

function chainOf(device: TestDevice, n: number): OpRecord[] {
  return Array.from({ length: n }, (_, i) => device.op('knowledge', { id: `k${i}` }));
}

function verify(device: TestDevice, ops: readonly OpRecord[], publicKey: string | null = device.publicKey) {
  return verifyChain({ device: device.id, anchor: null, ops, publicKey }, coreCrypto);
}

/** Re-hashes and re-signs an op after a field changed, so only the intended check can fail. */
function rehash(device: TestDevice, op: OpRecord): OpRecord {
  return device.resign({ ...op, op_id: opIdOf(op, coreCrypto) });
}

describe('chain verification', () => {
  it('accepts a contiguous, signed chain', () => {
    const device = new TestDevice('laptop', 1);
    const ops = chainOf(device, 5);
    expect(verify(device, ops)).toEqual({ valid: ops, error: null });
  });

  it('needs only the signature of the run head: the chain binds every earlier op to it', () => {
    const device = new TestDevice('laptop', 1);
    const ops = chainOf(device, 3);
    const unsignedMiddle = [ops[0]!, { ...ops[1]!, sig: 'A'.repeat(86) }, ops[2]!];
    expect(verify(device, unsignedMiddle).valid).toHaveLength(3);
  });

  const cases: Array<[ChainErrorKind, (ops: OpRecord[], device: TestDevice) => OpRecord[], number]> = [
    ['id_mismatch', (ops) => [ops[0]!, { ...ops[1]!, payload: { id: 'forged' } }, ops[2]!], 1],
    [
      'device_mismatch',
      (ops, d) => [
        ops[0]!,
        rehash(d, { ...ops[1]!, hlc: { ...ops[1]!.hlc, device_id: d.id === 'laptop' ? ('phone' as typeof d.id) : d.id } }),
        ops[2]!,
      ],
      1,
    ],
    ['duplicate_seq', (ops) => [ops[0]!, ops[1]!, ops[1]!, ops[2]!], 2],
    ['seq_gap', (ops) => [ops[0]!, ops[2]!], 1],
    ['prev_mismatch', (ops, d) => [ops[0]!, rehash(d, { ...ops[1]!, prev: ops[1]!.op_id })], 1],
    ['prev_mismatch', (ops, d) => [rehash(d, { ...ops[0]!, prev: ops[1]!.op_id })], 0],
    ['hlc_not_monotonic', (ops, d) => [ops[0]!, rehash(d, { ...ops[1]!, hlc: ops[0]!.hlc })], 1],
    ['unanchored', (ops) => [ops[1]!, ops[2]!], 0],
  ];

  it.each(cases)('names %s and keeps the valid prefix', (kind, tamper, validCount) => {
    const device = new TestDevice('laptop', 1);
    const ops = tamper(chainOf(device, 3), device);
    const result = verify(device, ops);
    expect(result.error?.kind).toBe(kind);
    expect(result.error?.message).toContain(kind.replaceAll('_', ' '));
    expect(result.valid).toEqual(ops.slice(0, validCount));
  });

  it('names bad_signature when no signature from the registered key covers the run', () => {
    const device = new TestDevice('laptop', 1);
    const stranger = new TestDevice('laptop', 2);
    const ops = chainOf(device, 3);
    const result = verify(device, ops, stranger.publicKey);
    expect(result.error?.kind).toBe('bad_signature');
    expect(result.valid).toEqual([]);
  });

  it('falls back to the longest prefix whose head is signed when the newest signature is forged', () => {
    const device = new TestDevice('laptop', 1);
    const ops = chainOf(device, 4);
    const forgedHead = [...ops.slice(0, 3), { ...ops[3]!, sig: ops[2]!.sig }];
    const result = verify(device, forgedHead);
    expect(result.error).toMatchObject({ kind: 'bad_signature', seq: 3 });
    expect(result.valid).toEqual(ops.slice(0, 3));
  });

  it('continues from an anchor: the first op must follow the anchor head', () => {
    const device = new TestDevice('laptop', 1);
    const ops = chainOf(device, 4);
    const anchor = { seq: 1, op_id: ops[1]!.op_id, hlc: ops[1]!.hlc };
    const tail = verifyChain({ device: device.id, anchor, ops: ops.slice(2), publicKey: device.publicKey }, coreCrypto);
    expect(tail).toEqual({ valid: ops.slice(2), error: null });
  });
});
