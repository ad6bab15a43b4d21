/**
 * Worker thread for the op minter (op-minter.ts): receives batches of mint requests in seq
 * order, answers each batch with the minted ops (or named errors) in the same order.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import type { DeviceId, OpId } from '../oplog/ids.js';
import { isOpsyncError } from '../oplog/opsync-error.js';
import { scopeFromKey } from '../oplog/scope.js';
import { parseDeviceKeyFile } from './device-key.js';
import { Keyring } from './keyring.js';
import { chainFunction, type Minted, type MintRequest } from './op-minter.js';
import { scopeKeyFromBytes } from './scope-key.js';

const start = workerData as { device: DeviceId; deviceKeyText: string; keys: Array<{ scope: string; key: Uint8Array }>; prev: OpId | null };
const keyring = new Keyring(start.keys.map((k) => scopeKeyFromBytes(scopeFromKey(k.scope), k.key)));
const nonces = { pool: new Uint8Array(0), offset: 0 };
const deviceKey = parseDeviceKeyFile(start.deviceKeyText, 'the device key');
const chain = chainFunction(
  start.device,
  (scope) => keyring.forScope(scope),
  start.prev,
  { sha256Hex: (text) => createHash('sha256').update(text, 'utf8').digest('hex') },
  () => {
    if (nonces.offset + 24 > nonces.pool.length) {
      nonces.pool = randomFillSync(new Uint8Array(24 * 1024));
      nonces.offset = 0;
    }
    nonces.offset += 24;
    return nonces.pool.subarray(nonces.offset - 24, nonces.offset);
  },
);

type Answer = Minted | { error: { code: string; message: string } };

/**
 * Answers leave in request order. Chaining (seal, hash) runs here in order; signatures run on
 * libuv's thread pool and may finish out of order, so an answer waits in `ready` (by request
 * number) until every earlier one is done, and answers leave in groups.
 */
const ready = new Map<number, Answer>();
let requested = 0;
let sent = 0;

function flush(): void {
  const group: Answer[] = [];
  for (let answer = ready.get(sent); answer !== undefined; answer = ready.get(sent)) {
    group.push(answer);
    ready.delete(sent++);
  }
  if (group.length > 0) parentPort!.postMessage({ minted: group });
}

parentPort!.on('message', (message: { requests?: MintRequest[]; key?: { scope: string; key: Uint8Array } }) => {
  if (message.key) {
    keyring.add(scopeKeyFromBytes(scopeFromKey(message.key.scope), message.key.key));
    return;
  }
  for (const request of message.requests!) {
    const slot = requested++;
    let chained;
    try {
      chained = chain(request);
    } catch (error) {
      ready.set(slot, { error: isOpsyncError(error) ? { code: error.code, message: error.message } : { code: 'session_closed', message: String(error) } });
      flush();
      continue;
    }
    const { body, bodyText } = chained;
    deviceKey.signAsync(body.op_id).then(
      (sig) => {
        ready.set(slot, { op: { ...body, sig }, bodyText });
        flush();
      },
      (error: unknown) => {
        ready.set(slot, { error: { code: 'session_closed', message: `signing failed: ${String(error)}` } });
        flush();
      },
    );
  }
});
