import { randomFillSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { Hlc } from '../oplog/hlc.js';
import type { DeviceId, OpId } from '../oplog/ids.js';
import { hashBody, recordFromBody, type OpRecord } from '../oplog/op-record.js';
import { OpsyncError, type ErrorCode } from '../util/opsync-error.js';
import { scopeKey, type Scope } from '../oplog/scope.js';
import type { Surface } from '../oplog/surface.js';
import type { JsonObject } from '../util/json.js';
import type { DeviceKey } from './device-key.js';
import { sealPayload } from './envelope.js';
import type { Keyring } from './keyring.js';
import type { ScopeKey } from './scope-key.js';

/**
 * Mints this device's ops: seals the payload, chains the op onto the previous one (`prev`),
 * computes its op id and signs it — everything an op needs that costs CPU (an Ed25519
 * signature alone is ~21 µs). Requests are answered in the order they were made, so ops chain
 * in seq order. The worker minter does the work on a second core; the inline one in-process
 * (tests, simulations, and code running from TypeScript sources).
 */
export interface MintRequest {
  readonly seq: number;
  readonly hlc: Hlc;
  readonly scope: Scope;
  readonly surface: Surface;
  /** The payload's canonical JSON (the caller has it already, to check its size). */
  readonly plainText: string;
}

export interface Minted {
  readonly op: OpRecord;
  /** The op's canonical record text (so storing the op need not encode it again). */
  readonly record: string;
}

export interface OpMinter {
  /** Resolves once the minter can mint (a worker has loaded its code); rejects if it cannot start. */
  ready(): Promise<void>;
  mint(request: MintRequest): Promise<Minted>;
  /** Makes a newly imported scope key available for sealing. */
  addKey(key: ScopeKey): void;
  close(): Promise<void>;
}

/** The chain state a minter continues from. */
export interface MinterStart {
  readonly device: DeviceId;
  readonly deviceKey: DeviceKey;
  readonly keyring: Keyring;
  readonly prev: OpId | null;
  readonly crypto: CoreCrypto;
}

const WORKER = new URL('./op-mint-worker.js', import.meta.url);

/** A minter on a worker thread when the compiled worker exists, else inline. */
export function createOpMinter(start: MinterStart): OpMinter {
  return existsSync(WORKER) ? workerMinter(start) : inlineMinter(start);
}

export function inlineMinter(start: MinterStart): OpMinter {
  const chain = chainFunction(start.device, (scope) => start.keyring.forScope(scope), start.prev, start.crypto, nonceSource());
  return {
    ready: () => Promise.resolve(),
    // A throw inside the executor rejects the promise (a missing key, for one).
    mint: (request) =>
      new Promise((resolve) => {
        const { body, bodyText } = chain(request);
        const sig = start.deviceKey.sign(body.op_id);
        resolve({ op: { ...body, sig }, record: recordFromBody(bodyText, body.op_id, sig) });
      }),
    addKey: (key) => start.keyring.add(key),
    close: () => Promise.resolve(),
  };
}

/**
 * The chaining step, shared by both minters: seal, chain onto the last op, hash. It keeps the
 * chain's last op id, so calls must come in seq order; signing the result may run in parallel.
 */
export function chainFunction(
  device: DeviceId,
  keyFor: (scope: Scope) => ScopeKey | undefined,
  prev: OpId | null,
  crypto: Pick<CoreCrypto, 'sha256Hex'>,
  nonce: () => Uint8Array,
): (request: MintRequest) => { body: Omit<OpRecord, 'sig'>; bodyText: string } {
  let last = prev;
  return ({ seq, hlc, scope, surface, plainText }) => {
    const key = keyFor(scope);
    if (!key)
      throw new OpsyncError('key_missing', `This device holds no key for scope ${scopeKey(scope)}; import one first.`, {
        scope: scopeKey(scope),
      });
    const payload = sealPayload(key, plainText, { device_id: device, seq, scope, surface }, nonce()) as unknown as JsonObject;
    const fields = { device_id: device, seq, prev: last, hlc, scope, surface, payload };
    const { op_id, text } = hashBody(fields, crypto);
    last = op_id;
    return { body: { op_id, ...fields }, bodyText: text };
  };
}

/**
 * XChaCha20-Poly1305 nonces (24 random bytes each) from a pool the OS fills 1 024 at a time: one
 * `randomFillSync` per 1 024 ops instead of one per op.
 */
export function nonceSource(): () => Uint8Array {
  let pool = new Uint8Array(0);
  let offset = 0;
  return () => {
    if (offset === pool.length) {
      pool = randomFillSync(new Uint8Array(24 * 1024));
      offset = 0;
    }
    offset += 24;
    return pool.subarray(offset - 24, offset);
  };
}

/** The worker answers with canonical record texts: one string crosses threads faster than an object graph. */
type WorkerAnswer = { ready: true } | { minted: Array<string | { error: { code: ErrorCode; message: string } }> };

function workerMinter(start: MinterStart): OpMinter {
  const worker = new Worker(WORKER, {
    workerData: {
      device: start.device,
      deviceKeyText: start.deviceKey.toFileText(),
      keys: start.keyring.all().map((k) => ({ scope: scopeKey(k.scope), key: k.key })),
      prev: start.prev,
    },
  });
  const pending: Array<{ resolve: (minted: Minted) => void; reject: (error: Error) => void }> = [];
  let batch: MintRequest[] = [];
  let failed: Error | null = null;
  let started!: { resolve: () => void; reject: (error: Error) => void };
  // The worker loads its code after the daemon is up; a load that fails (EMFILE, say) must fail the start, not a later append.
  const ready = new Promise<void>((resolve, reject) => (started = { resolve, reject }));
  ready.catch(() => {});
  const failAll = (error: Error) => {
    failed = error;
    started.reject(error);
    for (const waiter of pending.splice(0)) waiter.reject(error);
  };
  worker.on('message', (answer: WorkerAnswer) => {
    if ('ready' in answer) return started.resolve();
    for (const result of answer.minted) {
      const waiter = pending.shift()!;
      if (typeof result !== 'string') waiter.reject(new OpsyncError(result.error.code, result.error.message));
      else waiter.resolve({ op: JSON.parse(result) as OpRecord, record: result });
    }
  });
  worker.on('error', failAll);
  worker.on('exit', (code) => failAll(new OpsyncError('session_closed', `The op minting worker stopped (exit code ${code}).`)));
  return {
    ready: () => ready,
    mint(request) {
      if (failed) return Promise.reject(failed);
      // Requests made in one turn of the event loop travel to the worker as one message.
      if (batch.length === 0) {
        queueMicrotask(() => {
          worker.postMessage({ requests: batch });
          batch = [];
        });
      }
      batch.push(request);
      return new Promise((resolve, reject) => pending.push({ resolve, reject }));
    },
    addKey(key) {
      start.keyring.add(key);
      worker.postMessage({ key: { scope: scopeKey(key.scope), key: key.key } });
    },
    async close() {
      await worker.terminate();
    },
  };
}
