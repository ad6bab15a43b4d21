import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { OpsyncError, type ErrorCode } from '../util/opsync-error.js';
import { scopeKey } from '../oplog/scope.js';
import type { JsonObject } from '../util/json.js';
import { keyedChunkDigest } from './chunk-digest.js';
import { openBytes } from './envelope.js';
import type { Keyring } from './keyring.js';

/**
 * Opens sealed checkpoint chunks (JSON text of an envelope) on a worker thread, so that callers
 * can decrypt one chunk while they process the previous one. Falls back to opening inline when
 * the compiled worker is not available (code running from TypeScript sources in tests).
 */
export interface ChunkOpener {
  /** The plaintext of a sealed chunk and its digest: keyed (`keyedChunkDigest`, format 2), or the SHA-256 of format 1. */
  open(sealed: string, aad: string, what: string, keyed: boolean): Promise<OpenedChunk>;
  close(): Promise<void>;
}

export interface OpenedChunk {
  readonly plain: Uint8Array;
  readonly digest: string;
}

const WORKER = new URL('./chunk-open-worker.js', import.meta.url);

export function createChunkOpener(keyring: Keyring): ChunkOpener {
  if (!existsSync(WORKER)) return inlineOpener(keyring);
  const keys = keyring.all().map((k) => ({ scope: scopeKey(k.scope), key: k.key }));
  const worker = new Worker(WORKER, { workerData: { keys } });
  const pending = new Map<number, { resolve: (opened: OpenedChunk) => void; reject: (error: Error) => void }>();
  let nextId = 0;
  const failAll = (error: Error) => {
    for (const waiter of pending.values()) waiter.reject(error);
    pending.clear();
  };
  worker.on(
    'message',
    (message: { id: number; plain?: Uint8Array; digest?: string; error?: { code: ErrorCode; message: string; data: JsonObject } }) => {
      const waiter = pending.get(message.id);
      pending.delete(message.id);
      if (message.error) waiter?.reject(new OpsyncError(message.error.code, message.error.message, message.error.data));
      else waiter?.resolve({ plain: message.plain!, digest: message.digest! });
    },
  );
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new Error(`the chunk decryption worker exited with code ${code}`)));
  return {
    open: (sealed, aad, what, keyed) =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, sealed, aad, what, keyed });
      }),
    close: async () => {
      await worker.terminate();
    },
  };
}

function inlineOpener(keyring: Keyring): ChunkOpener {
  return {
    open: (sealed, aad, what, keyed) => Promise.resolve(openChunk(keyring, sealed, aad, what, keyed)),
    close: () => Promise.resolve(),
  };
}

/** Opens one sealed chunk (JSON text of an envelope; unparseable text is refused by name). */
export function openChunk(keyring: Keyring, sealed: string, aad: string, what: string, keyed: boolean): OpenedChunk {
  let envelope: unknown;
  try {
    envelope = JSON.parse(sealed);
  } catch {
    envelope = null;
  }
  const plain = openBytes(keyring, envelope, aad, what);
  // It opened, so its key id names a key of the keyring: the digest is keyed with the sealing key.
  const digest = keyed
    ? keyedChunkDigest(keyring.byId((envelope as { kid: string }).kid)!, plain)
    : createHash('sha256').update(plain).digest('hex');
  return { plain, digest };
}
