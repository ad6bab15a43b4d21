import { verifyChain, type ChainCheck } from '../oplog/chain.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { Frontier } from '../oplog/frontier.js';
import type { DeviceId } from '../oplog/ids.js';
import type { OpRecord } from '../oplog/op-record.js';

/**
 * A device's ops after a checkpoint must continue the chain the checkpoint's frontier names:
 * the first op's seq is the frontier seq + 1 and its prev the frontier op id. Two failures are
 * specific to anchoring and named as such:
 *
 * - `anchor_mismatch`: the tail does not continue the checkpoint's head for its device;
 * - `unanchored`: the tail starts above seq 0 and the checkpoint has no head for its device.
 */
export type AnchoredTail =
  | { readonly ok: true; readonly check: ChainCheck }
  | { readonly ok: false; readonly code: 'anchor_mismatch' | 'unanchored'; readonly message: string };

export function anchorTail(
  frontier: Frontier,
  device: DeviceId,
  ops: readonly OpRecord[],
  publicKey: string | null,
  crypto: CoreCrypto,
): AnchoredTail {
  const anchor = frontier.get(device) ?? null;
  const check = verifyChain({ device, anchor, ops, publicKey }, crypto);
  const error = check.error;
  if (error && check.valid.length === 0) {
    if (error.kind === 'unanchored') {
      return {
        ok: false,
        code: 'unanchored',
        message: `device ${device}'s ops start at seq ${error.seq} but the checkpoint holds no head for it`,
      };
    }
    if (
      anchor &&
      (error.kind === 'prev_mismatch' || error.kind === 'seq_gap' || error.kind === 'duplicate_seq' || error.kind === 'hlc_not_monotonic')
    ) {
      return {
        ok: false,
        code: 'anchor_mismatch',
        message: `device ${device}'s op at seq ${error.seq} does not continue the checkpoint head (seq ${anchor.seq}, ${anchor.op_id}): ${error.kind.replaceAll('_', ' ')}`,
      };
    }
  }
  return { ok: true, check };
}
