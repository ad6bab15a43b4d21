import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { Frontier } from '../oplog/frontier.js';
import type { DeviceId } from '../oplog/ids.js';
import type { ChainHead } from '../oplog/op-record.js';
import type { FoldState } from '../fold/fold-state.js';
import { assembleCheckpoint, type ChunkDigest, type PlainCheckpoint } from './checkpoint.js';

export interface Covered {
  readonly frontier: Frontier;
  readonly state: FoldState;
}

/**
 * The checkpoint of the union of two checkpoints' op-sets (proposals/session.md §Rebase). Each
 * covers a prefix of every device's chain, so the union covers, per device, the longer of the
 * two prefixes, and its state is the merge of the two states (every fold rule is a join).
 * `into.state` becomes the merged state. Null when the two disagree on a device's op at the
 * same seq — forked chains, which no merge may paper over.
 */
export function mergeCheckpoints(
  into: Covered,
  other: Covered,
  crypto: Pick<CoreCrypto, 'sha256Hex'>,
  digest?: ChunkDigest,
): PlainCheckpoint | null {
  const frontier = new Map<DeviceId, ChainHead>(into.frontier);
  for (const [device, head] of other.frontier) {
    const mine = frontier.get(device);
    if (mine && mine.seq === head.seq && mine.op_id !== head.op_id) return null;
    if (!mine || mine.seq < head.seq) frontier.set(device, head);
  }
  into.state.merge(other.state);
  return assembleCheckpoint(into.state, frontier, crypto, digest);
}
