/**
 * Worker thread for the op minter (op-minter.ts): receives batches of mint requests in seq
 * order and answers, in the same order, with each minted op's canonical record text (or a named
 * error).
 */
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import type { DeviceId, OpId } from '../oplog/ids.js';
import { recordFromBody } from '../oplog/op-record.js';
import { isOpsyncError } from '../util/opsync-error.js';
import { scopeFromKey } from '../oplog/scope.js';
import { parseDeviceKeyFile } from './device-key.js';
import { Keyring } from './keyring.js';
import { chainFunction, nonceSource, type MintRequest } from './op-minter.js';
import { scopeKeyFromBytes } from './scope-key.js';

const start = workerData as { device: DeviceId; deviceKeyText: string; keys: Array<{ scope: string; key: Uint8Array }>; prev: OpId | null };
const keyring = new Keyring(start.keys.map((k) => scopeKeyFromBytes(scopeFromKey(k.scope), k.key)));
const deviceKey = parseDeviceKeyFile(start.deviceKeyText, 'the device key');
const chain = chainFunction(
  start.device,
  (scope) => keyring.forScope(scope),
  start.prev,
  { sha256Hex: (text) => createHash('sha256').update(text, 'utf8').digest('hex') },
  nonceSource(),
);

/** Answers leave in chunks, so the journal writes the first ops of a large batch while later ones are signed. */
const CHUNK = 16;

/**
 * Signing runs here, synchronously: an Ed25519 signature costs ~21 µs, and handing each one to
 * libuv's thread pool costs more than that in thread wake-ups.
 */
parentPort!.on('message', (message: { requests?: MintRequest[]; key?: { scope: string; key: Uint8Array } }) => {
  if (message.key) {
    keyring.add(scopeKeyFromBytes(scopeFromKey(message.key.scope), message.key.key));
    return;
  }
  const requests = message.requests!;
  for (let start = 0; start < requests.length; start += CHUNK) {
    parentPort!.postMessage({ minted: requests.slice(start, start + CHUNK).map(mint) });
  }
});

parentPort!.postMessage({ ready: true });

function mint(request: MintRequest): string | { error: { code: string; message: string } } {
  try {
    const { body, bodyText } = chain(request);
    return recordFromBody(bodyText, body.op_id, deviceKey.sign(body.op_id));
  } catch (error) {
    return {
      error: isOpsyncError(error) ? { code: error.code, message: error.message } : { code: 'session_closed', message: String(error) },
    };
  }
}
