import { CheckpointLoader, headerToJson, parseCheckpointHeader, type CheckpointHeader, type PlainCheckpoint } from '../checkpoint/checkpoint.js';
import { createChunkOpener, type OpenedChunk } from '../crypto/chunk-opener.js';
import { sealDeterministic } from '../crypto/envelope.js';
import type { Keyring } from '../crypto/keyring.js';
import type { FoldState } from '../fold/fold-state.js';
import { canonicalize } from '../oplog/canonical.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import { isOpsyncError, OpsyncError, type ErrorCode } from '../oplog/opsync-error.js';
import { scopeFromKey } from '../oplog/scope.js';
import type { CheckpointFile, CheckpointHeaderJson, CheckpointStream } from '../../relay/relay.js';

/**
 * Checkpoints as they are published: the plaintext header (hashes and frontier, which the relay
 * may read) and each chunk sealed with its scope's key (proposals/envelope.md §Checkpoint
 * sections). A relay never holds a plaintext payload.
 */
export function sealCheckpoint(plain: PlainCheckpoint, keyring: Keyring): CheckpointFile {
  const chunks = plain.header.chunks.map((ref, index) => {
    const key = keyring.forScope(scopeFromKey(ref.scope));
    if (!key) throw new OpsyncError('key_missing', `Cannot seal a checkpoint chunk of scope ${ref.scope}: this device holds no key for it.`, { scope: ref.scope });
    return JSON.stringify(sealDeterministic(key, Buffer.from(plain.chunks[index]!, 'utf8'), chunkAad(ref.scope, ref.digest)));
  });
  return { header: headerToJson(plain.header) as CheckpointHeaderJson, chunks };
}

/** A checkpoint file whose bytes cannot be trusted: another copy may still be good. */
export const DAMAGED_CHECKPOINT: ReadonlySet<ErrorCode> = new Set(['checkpoint_invalid', 'decrypt_failed']);

/** Whether a checkpoint fails to open as damaged; null when there is none, or it cannot be judged (a key is missing). */
export async function checkpointDamaged(read: CheckpointStream | null, keyring: Keyring, crypto: CoreCrypto): Promise<boolean | null> {
  if (!read) return null;
  try {
    await openCheckpoint(read, keyring, crypto);
    return false;
  } catch (error) {
    return isOpsyncError(error) && DAMAGED_CHECKPOINT.has(error.code) ? true : null;
  }
}

/** Opens and verifies a published checkpoint: header hash, every chunk, and the state hash. */
export async function openCheckpoint(source: CheckpointStream, keyring: Keyring, crypto: CoreCrypto): Promise<{ header: CheckpointHeader; state: FoldState }> {
  const header = parseCheckpointHeader(source.header, crypto);
  const loader = new CheckpointLoader(header, crypto);
  const opener = createChunkOpener(keyring);
  const addOpened = async (opened: Promise<OpenedChunk>): Promise<void> => {
    const { plain, digest } = await opened;
    loader.addChunk(Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength).toString('utf8'), digest);
  };
  try {
    // Chunk i+1 is decrypted (on a worker) while chunk i is parsed and folded here.
    let previous: Promise<OpenedChunk> | null = null;
    let index = 0;
    for await (const sealed of source.chunks) {
      const ref = header.chunks[index];
      if (!ref) throw new OpsyncError('checkpoint_invalid', `Checkpoint ${header.checkpoint_hash} has more chunks than its header lists.`);
      const opened = opener.open(sealed, chunkAad(ref.scope, ref.digest), `chunk ${index} of checkpoint ${header.checkpoint_hash}`);
      opened.catch(() => undefined);
      index++;
      if (previous) await addOpened(previous);
      previous = opened;
    }
    if (previous) await addOpened(previous);
  } finally {
    await opener.close();
  }
  return { header, state: loader.finish() };
}

function chunkAad(scope: string, digest: string): string {
  return canonicalize({ checkpoint_chunk: digest, scope });
}
