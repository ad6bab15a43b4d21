import type { CoreCrypto } from './core-crypto.js';
import { compareHlc } from './hlc.js';
import type { DeviceId } from './ids.js';
import { opIdHolds, type ChainHead, type OpRecord } from './op-record.js';

/**
 * Chain verification (proposals/op-record.md §Chain). Each failure has a name:
 *
 * | kind               | meaning                                                          |
 * |--------------------|------------------------------------------------------------------|
 * | id_mismatch        | op_id is not the hash of the op's other fields                    |
 * | device_mismatch    | the op (or its hlc) names another device than the chain's         |
 * | duplicate_seq      | a seq at or below one already in the chain                        |
 * | seq_gap            | a seq skipped                                                     |
 * | prev_mismatch      | prev is not the previous op's id (or seq 0 carries a prev)        |
 * | hlc_not_monotonic  | the stamp is not strictly above the previous op's                 |
 * | bad_signature      | the run's head signature does not verify against the device key   |
 * | unanchored         | the chain starts above seq 0 with no checkpoint anchor            |
 */
export type ChainErrorKind =
  'id_mismatch' | 'device_mismatch' | 'duplicate_seq' | 'seq_gap' | 'prev_mismatch' | 'hlc_not_monotonic' | 'bad_signature' | 'unanchored';

export interface ChainError {
  readonly kind: ChainErrorKind;
  readonly device_id: DeviceId;
  readonly seq: number;
  readonly message: string;
}

export interface ChainCheck {
  /**
   * The longest prefix of the input that is contiguous with the anchor, hash-verified and —
   * when a key was given — authenticated by one verifying signature on its newest op.
   */
  readonly valid: readonly OpRecord[];
  /** Why the rest was refused, or null when every op is valid. */
  readonly error: ChainError | null;
}

export interface ChainInput {
  readonly device: DeviceId;
  /** The op the run continues from (the holder's head, or a checkpoint's frontier), or null for a chain from seq 0. */
  readonly anchor: ChainHead | null;
  readonly ops: readonly OpRecord[];
  /**
   * The device's registered key. Because every op_id covers `prev`, one signature on the newest
   * op of a hash-verified contiguous run authenticates the whole run; null skips signatures
   * (only for ops this device verified before it journaled them).
   */
  readonly publicKey: string | null;
}

export function verifyChain(input: ChainInput, crypto: CoreCrypto): ChainCheck {
  const { device, ops } = input;
  let head = input.anchor;
  let count = 0;
  let error: ChainError | null = null;
  for (const op of ops) {
    error = checkLink(device, head, op, crypto);
    if (error) break;
    head = { seq: op.seq, op_id: op.op_id, hlc: op.hlc };
    count++;
  }
  if (input.publicKey === null || count === 0) return { valid: ops.slice(0, count), error };
  const signed = lastSigned(ops, count, input.publicKey, crypto);
  if (signed === count) return { valid: ops.slice(0, count), error };
  const forged = ops[signed]!;
  return {
    valid: ops.slice(0, signed),
    error: failure('bad_signature', device, forged.seq, 'no signature from the registered device key covers this op'),
  };
}

/** Checks that `op` continues the chain whose newest op is `head`, including its hash (not its signature). */
export function checkLink(device: DeviceId, head: ChainHead | null, op: OpRecord, crypto: CoreCrypto): ChainError | null {
  const error = checkLinkage(device, head, op);
  if (error) return error;
  if (!opIdHolds(op, crypto)) return failure('id_mismatch', device, op.seq, 'op_id is not the hash of the op');
  return null;
}

/**
 * The link checks that need no hashing: device, seq, prev and stamp. For ops whose op_id was
 * already checked against their bytes (journal reopen), this is the rest of chain verification.
 */
export function checkLinkage(device: DeviceId, head: ChainHead | null, op: OpRecord): ChainError | null {
  if (op.device_id !== device || op.hlc.device_id !== device) {
    return failure('device_mismatch', device, op.seq, `the op names device ${op.device_id} (hlc ${op.hlc.device_id})`);
  }
  const expectedSeq = head ? head.seq + 1 : 0;
  if (op.seq < expectedSeq) return failure('duplicate_seq', device, op.seq, `seq ${op.seq} is already in the chain`);
  if (op.seq > expectedSeq) {
    return head === null
      ? failure('unanchored', device, op.seq, `the chain starts at seq ${op.seq} without a checkpoint anchor`)
      : failure('seq_gap', device, op.seq, `expected seq ${expectedSeq}, found ${op.seq}`);
  }
  const expectedPrev = head ? head.op_id : null;
  if (op.prev !== expectedPrev) {
    return failure('prev_mismatch', device, op.seq, `prev is ${String(op.prev)}, expected ${String(expectedPrev)}`);
  }
  if (head && compareHlc(op.hlc, head.hlc) <= 0) {
    return failure('hlc_not_monotonic', device, op.seq, 'the stamp is not above the previous op');
  }
  return null;
}

/** Length of the longest prefix (of the first `count` ops) whose newest op carries a valid signature. */
function lastSigned(ops: readonly OpRecord[], count: number, publicKey: string, crypto: CoreCrypto): number {
  for (let n = count; n > 0; n--) {
    const op = ops[n - 1]!;
    if (crypto.verify(publicKey, op.op_id, op.sig)) return n;
  }
  return 0;
}

function failure(kind: ChainErrorKind, device: DeviceId, seq: number, detail: string): ChainError {
  return { kind, device_id: device, seq, message: `device ${device} seq ${seq}: ${kind.replaceAll('_', ' ')}: ${detail}` };
}
