import {
  assembleCheckpoint,
  CheckpointLoader,
  headerToJson,
  parseCheckpointHeader,
  plainDigest,
  type CheckpointHeader,
} from '../checkpoint/checkpoint.js';
import { mergeCheckpoints, type Covered } from '../checkpoint/merge.js';
import { createChunkOpener, type OpenedChunk } from '../crypto/chunk-opener.js';
import type { DeviceKey } from '../crypto/device-key.js';
import { sealDeterministic } from '../crypto/envelope.js';
import type { Keyring } from '../crypto/keyring.js';
import type { FoldState } from '../fold/fold-state.js';
import { canonicalize } from '../oplog/canonical.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { Frontier } from '../oplog/frontier.js';
import type { DeviceId } from '../oplog/ids.js';
import { isOpsyncError, OpsyncError, type ErrorCode } from '../util/opsync-error.js';
import { scopeFromKey } from '../oplog/scope.js';
import type { CheckpointFile, CheckpointHeaderJson, CheckpointStream } from '../../relay/port/relay.js';
import { chunkDigester, signHeader } from './checkpoint-auth.js';

/** The device that cuts and signs checkpoints. */
export interface Publisher {
  readonly device: DeviceId;
  readonly deviceKey: DeviceKey;
  readonly keyring: Keyring;
  readonly crypto: CoreCrypto;
}

/**
 * How a checkpoint read from somewhere is trusted: `local`, a copy in this device's own data
 * directory (it verified it before keeping it, and version 1 is read); otherwise the reason a
 * header is not authentic, or null (`headerProblem`), checked before any chunk is opened.
 */
export type HeaderTrust = 'local' | ((header: CheckpointHeader) => string | null | Promise<string | null>);

/**
 * Checkpoints as they are published: the plaintext header (hashes and frontier, which the relay
 * may read) and each chunk sealed with its scope's key (proposals/envelope.md §Checkpoint
 * sections). A relay never holds a plaintext payload.
 */
export function cutCheckpoint(
  state: FoldState,
  frontier: Frontier,
  publisher: Publisher,
): { header: CheckpointHeader; file: CheckpointFile } {
  const plain = assembleCheckpoint(state, frontier, publisher.crypto, chunkDigester(publisher.keyring));
  return seal(plain.header, plain.chunks, publisher);
}

/** The checkpoint of the union of two (`mergeCheckpoints`), cut and sealed; null for forked chains. */
export function mergeAndSeal(into: Covered, other: Covered, publisher: Publisher): CheckpointFile | null {
  const plain = mergeCheckpoints(into, other, publisher.crypto, chunkDigester(publisher.keyring));
  return plain && seal(plain.header, plain.chunks, publisher).file;
}

function seal(
  unsigned: CheckpointHeader,
  texts: readonly string[],
  publisher: Publisher,
): { header: CheckpointHeader; file: CheckpointFile } {
  const { keyring } = publisher;
  const header = signHeader(unsigned, keyring, publisher.device, publisher.deviceKey);
  const chunks = header.chunks.map((ref, index) => {
    const key = keyring.forScope(scopeFromKey(ref.scope));
    if (!key)
      throw new OpsyncError('key_missing', `Cannot seal a checkpoint chunk of scope ${ref.scope}: this device holds no key for it.`, {
        scope: ref.scope,
      });
    return JSON.stringify(sealDeterministic(key, Buffer.from(texts[index]!, 'utf8'), chunkAad(header, index)));
  });
  return { header, file: { header: headerToJson(header) as CheckpointHeaderJson, chunks } };
}

/** A checkpoint file whose bytes cannot be trusted: another copy may still be good. */
export const DAMAGED_CHECKPOINT: ReadonlySet<ErrorCode> = new Set(['checkpoint_invalid', 'decrypt_failed']);

/** Whether a checkpoint fails to open as damaged; null when there is none, or it cannot be judged (a key is missing). */
export async function checkpointDamaged(
  read: CheckpointStream | null,
  keyring: Keyring,
  crypto: CoreCrypto,
  trust: HeaderTrust,
): Promise<boolean | null> {
  if (!read) return null;
  try {
    await openCheckpoint(read, keyring, crypto, trust);
    return false;
  } catch (error) {
    return isOpsyncError(error) && DAMAGED_CHECKPOINT.has(error.code) ? true : null;
  }
}

/** Opens and verifies a published checkpoint: its authenticity (`trust`), header hash, every chunk, and the state hash. */
export async function openCheckpoint(
  source: CheckpointStream,
  keyring: Keyring,
  crypto: CoreCrypto,
  trust: HeaderTrust,
  progress?: (records: number, total: number) => void,
): Promise<{ header: CheckpointHeader; state: FoldState }> {
  const header = await trustedHeader(source.header, crypto, trust);
  const total = header.chunks.reduce((sum, chunk) => sum + chunk.count, 0);
  let records = 0;
  progress?.(0, total);
  const keyed = header.v !== 1;
  const loader = new CheckpointLoader(header, crypto, keyed ? chunkDigester(keyring) : plainDigest(crypto));
  const opener = createChunkOpener(keyring);
  const addOpened = async (opened: Promise<OpenedChunk>, count: number): Promise<void> => {
    const { plain, digest } = await opened;
    loader.addChunk(Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength).toString('utf8'), digest);
    records += count;
    progress?.(records, total);
  };
  try {
    // Chunk i+1 is decrypted (on a worker) while chunk i is parsed and folded here.
    let previous: { opened: Promise<OpenedChunk>; count: number } | null = null;
    let index = 0;
    for await (const sealed of source.chunks) {
      const ref = header.chunks[index];
      if (!ref) throw new OpsyncError('checkpoint_invalid', `Checkpoint ${header.checkpoint_hash} has more chunks than its header lists.`);
      const opened = opener.open(sealed, chunkAad(header, index), `chunk ${index} of checkpoint ${header.checkpoint_hash}`, keyed);
      opened.catch(() => undefined);
      index++;
      if (previous) await addOpened(previous.opened, previous.count);
      previous = { opened, count: ref.count };
    }
    if (previous) await addOpened(previous.opened, previous.count);
  } finally {
    await opener.close();
  }
  return { header, state: loader.finish() };
}

/** A checkpoint's header, parsed and — unless it is a local copy — authenticated (`checkpoint_unauthenticated` otherwise). */
export async function trustedHeader(json: CheckpointHeaderJson, crypto: CoreCrypto, trust: HeaderTrust): Promise<CheckpointHeader> {
  const header = parseCheckpointHeader(json, crypto);
  const problem = trust === 'local' ? null : await trust(header);
  if (problem === null) return header;
  throw new OpsyncError('checkpoint_unauthenticated', `Checkpoint ${header.checkpoint_hash} on the relay is not used: ${problem}.`, {
    checkpoint_hash: header.checkpoint_hash,
  });
}

/**
 * A checkpoint's file bytes as they stream, each sealed chunk checked on the way: it opens under
 * its AAD (bound to the header) and its keyed digest is the header's. Nothing is parsed or folded:
 * for keeping a verified copy of a checkpoint whose state this device checked another way
 * (proposals/checkpoint.md §Compaction). Throws `checkpoint_invalid` or `decrypt_failed` at the
 * first chunk that fails, so a copy streamed from it is never completed.
 */
export async function* verifiedFileBytes(source: CheckpointStream, header: CheckpointHeader, keyring: Keyring): AsyncGenerator<Uint8Array> {
  yield Buffer.from(JSON.stringify(source.header) + '\n');
  const opener = createChunkOpener(keyring);
  try {
    let index = 0;
    for await (const sealed of source.chunks) {
      const ref = header.chunks[index];
      if (!ref || sealed.includes('\n'))
        throw new OpsyncError(
          'checkpoint_invalid',
          `Checkpoint ${header.checkpoint_hash} has more chunks than its header lists, or a chunk of more than one line.`,
        );
      const { digest } = await opener.open(
        sealed,
        chunkAad(header, index),
        `chunk ${index} of checkpoint ${header.checkpoint_hash}`,
        header.v !== 1,
      );
      if (digest !== ref.digest)
        throw new OpsyncError('checkpoint_invalid', `Chunk ${index} of checkpoint ${header.checkpoint_hash} does not match its digest.`);
      index++;
      yield Buffer.from(sealed + '\n');
    }
    if (index !== header.chunks.length)
      throw new OpsyncError(
        'checkpoint_invalid',
        `Only ${index} of the ${header.chunks.length} chunks of checkpoint ${header.checkpoint_hash} arrived.`,
      );
  } finally {
    await opener.close();
  }
}

/**
 * What a sealed chunk is bound to: in version 2 the whole header (its checkpoint hash covers
 * frontier, state hash and every chunk digest), the chunk's place and scope, so that no chunk can
 * be moved into another checkpoint or another place; in version 1 its digest and scope.
 */
function chunkAad(header: CheckpointHeader, index: number): string {
  const ref = header.chunks[index]!;
  if (header.v === 1) return canonicalize({ checkpoint_chunk: ref.digest, scope: ref.scope });
  return canonicalize({ checkpoint: header.checkpoint_hash, index, scope: ref.scope });
}
