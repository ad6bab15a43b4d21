/**
 * Worker thread: opens sealed checkpoint chunks so that decryption (the costliest step of
 * loading a large checkpoint) runs on the second core while the main thread parses and folds
 * the previous chunk. Receives the device's scope keys once, then {id, sealed, aad, what, keyed}
 * messages; answers {id, plain, digest} (plain transferred; digest its SHA-256 hex) or
 * {id, error: {code, message}}.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isOpsyncError } from '../util/opsync-error.js';
import { scopeFromKey } from '../oplog/scope.js';
import { openChunk } from './chunk-opener.js';
import { Keyring } from './keyring.js';
import { scopeKeyFromBytes } from './scope-key.js';

const { keys } = workerData as { keys: Array<{ scope: string; key: Uint8Array }> };
const keyring = new Keyring(keys.map((k) => scopeKeyFromBytes(scopeFromKey(k.scope), k.key)));

parentPort!.on('message', ({ id, sealed, aad, what, keyed }: { id: number; sealed: string; aad: string; what: string; keyed: boolean }) => {
  try {
    const { plain, digest } = openChunk(keyring, sealed, aad, what, keyed);
    parentPort!.postMessage({ id, plain, digest }, [plain.buffer as ArrayBuffer]);
  } catch (error) {
    parentPort!.postMessage({
      id,
      error: isOpsyncError(error)
        ? { code: error.code, message: error.message, data: error.data }
        : { code: 'decrypt_failed', message: String(error), data: {} },
    });
  }
});
