import { describe, expect, it } from 'vitest';
import { anchorTail } from '../../src/checkpoint/anchor.js';
import {
  assembleCheckpoint,
  CHUNK_TEXT,
  headerToJson,
  parseCheckpointHeader,
  restoreCheckpoint,
  type CheckpointHeader,
  type PlainCheckpoint,
} from '../../src/checkpoint/checkpoint.js';
import { generateDeviceKey } from '../../src/crypto/device-key.js';
import { Keyring } from '../../src/crypto/keyring.js';
import { scopeKeyFromBytes } from '../../src/crypto/scope-key.js';
import { headerProblem } from '../../src/session/checkpoint-auth.js';
import { cutCheckpoint, openCheckpoint, type Publisher } from '../../src/session/checkpoint-seal.js';
import { iterate } from '../../src/session/checkpoint-store.js';
import type { CheckpointFile } from '../../relay/port/relay.js';
import { PERSONAL_KEY } from '../helpers/world.js';
import { FoldState } from '../../src/fold/fold-state.js';
import type { DeviceId } from '../../src/oplog/ids.js';
import type { ChainHead, OpRecord } from '../../src/oplog/op-record.js';
import { stableFrontier, withStatus, type RosterEntry } from '../../src/oplog/roster.js';
import { materialize, redeliver } from '../helpers/op-sets.js';
import { seededRandom } from '../helpers/seeded.js';
import { coreCrypto, TestDevice } from '../helpers/test-device.js';

function foldAll(ops: readonly OpRecord[]): FoldState {
  const state = new FoldState(coreCrypto);
  for (const op of ops) state.apply(op);
  return state;
}

function frontierOf(ops: readonly OpRecord[]): Map<DeviceId, ChainHead> {
  const frontier = new Map<DeviceId, ChainHead>();
  for (const op of ops) frontier.set(op.device_id, { seq: op.seq, op_id: op.op_id, hlc: op.hlc });
  return frontier;
}

const publisher: Publisher = {
  device: 'laptop' as DeviceId,
  deviceKey: generateDeviceKey(),
  keyring: new Keyring([PERSONAL_KEY]),
  crypto: coreCrypto,
};

const specs = Array.from({ length: 120 }, (_, i) => ({ device: i % 3, advance: i % 2, kind: i % 10, key: i % 4, value: i % 6 }));
const ops = materialize(specs);

describe('checkpoint', () => {
  it('is byte-identical when two devices cut the same op-set received in different orders', () => {
    const one = assembleCheckpoint(foldAll(ops), frontierOf(ops), coreCrypto);
    const two = assembleCheckpoint(foldAll(redeliver(ops, seededRandom(7))), frontierOf(ops), coreCrypto);
    expect(JSON.stringify(headerToJson(two.header))).toBe(JSON.stringify(headerToJson(one.header)));
    expect(two.chunks).toEqual(one.chunks);
  });

  it('restores to the same state and state hash', () => {
    const state = foldAll(ops);
    const restored = restoreCheckpoint(assembleCheckpoint(state, frontierOf(ops), coreCrypto), coreCrypto);
    expect(restored.stateHash()).toBe(state.stateHash());
    expect(restored.conversation('c0')).toEqual(state.conversation('c0'));
  });

  it('re-checks the header hash when loading', () => {
    const { header } = cutCheckpoint(foldAll(ops), frontierOf(ops), publisher);
    const json = headerToJson(header);
    expect(parseCheckpointHeader(JSON.parse(JSON.stringify(json)), coreCrypto)).toEqual(header);
    const forged = { ...json, state_hash: 'sh-' + '0'.repeat(64) };
    expect(() => parseCheckpointHeader(forged, coreCrypto)).toThrow(/checkpoint_hash does not match/);
    expect(() => parseCheckpointHeader({ ...json, v: 3 }, coreCrypto)).toThrow(/format version 3/);
  });

  it('refuses a chunk that does not match its digest', () => {
    const checkpoint = assembleCheckpoint(foldAll(ops), frontierOf(ops), coreCrypto);
    const tampered: PlainCheckpoint = {
      ...checkpoint,
      chunks: [checkpoint.chunks[0]!.replace('"v":1', '"v":9'), ...checkpoint.chunks.slice(1)],
    };
    expect(() => restoreCheckpoint(tampered, coreCrypto)).toThrow(expect.objectContaining({ code: 'checkpoint_invalid' }));
  });

  it('cuts chunks by size as well as by count, so large records keep every chunk within CHUNK_TEXT', () => {
    const device = new TestDevice('laptop', 1);
    const big = 'x'.repeat(300_000);
    const large = Array.from({ length: 150 }, (_, i) => device.op('knowledge', { id: `k${i}`, text: big }));
    const state = foldAll(large);
    const checkpoint = assembleCheckpoint(state, frontierOf(large), coreCrypto);
    expect(checkpoint.chunks.length).toBeGreaterThanOrEqual(Math.ceil((150 * big.length) / CHUNK_TEXT));
    for (const text of checkpoint.chunks) expect(text.length).toBeLessThanOrEqual(CHUNK_TEXT);
    expect(restoreCheckpoint(checkpoint, coreCrypto).stateHash()).toBe(state.stateHash());
  });

  it('refuses a consistent-looking checkpoint whose state does not have the claimed state hash', () => {
    const checkpoint = assembleCheckpoint(foldAll(ops), frontierOf(ops), coreCrypto);
    const lie = assembleCheckpoint(foldAll(ops.slice(1)), frontierOf(ops), coreCrypto);
    const mixed: PlainCheckpoint = { header: { ...lie.header, state_hash: checkpoint.header.state_hash }, chunks: lie.chunks };
    expect(() => restoreCheckpoint(mixed, coreCrypto)).toThrow(/does not have the state hash/);
  });
});

describe('checkpoint authentication (a relay that holds no key)', () => {
  const keys = (device: DeviceId) => (device === publisher.device ? publisher.deviceKey.publicKey : null);

  it('accepts a header its member publisher cut and signed', () => {
    const { header } = cutCheckpoint(foldAll(ops), frontierOf(ops), publisher);
    expect(headerProblem(header, publisher.keyring, keys, coreCrypto)).toBeNull();
  });

  it('refuses a header anyone can write: version 1, a MAC under no key of ours, a changed field, a foreign signature', () => {
    const cut = cutCheckpoint(foldAll(ops), frontierOf(ops), publisher).header;
    const auth = cut.auth!;
    const empty = cutCheckpoint(new FoldState(coreCrypto), frontierOf(ops), publisher).header;
    const stranger = { ...publisher, keyring: new Keyring([scopeKeyFromBytes('personal', new Uint8Array(32).fill(7))]) };
    const cases: Array<[string, CheckpointHeader, RegExp]> = [
      ['version 1', { ...cut, v: 1, auth: null }, /version-1/],
      ['no personal key of ours', cutCheckpoint(foldAll(ops), frontierOf(ops), stranger).header, /not a personal key/],
      ['the empty state with the real MAC', { ...empty, auth }, /MAC does not verify/],
      ['another publisher named', { ...cut, auth: { ...auth, publisher: 'mallory' as DeviceId } }, /MAC does not verify/],
      [
        'a signature of another key',
        {
          ...cut,
          auth: {
            ...auth,
            sig: cutCheckpoint(foldAll(ops), frontierOf(ops), { ...publisher, deviceKey: generateDeviceKey() }).header.auth!.sig,
          },
        },
        /signature does not verify/,
      ],
    ];
    for (const [what, header, reason] of cases) expect(headerProblem(header, publisher.keyring, keys, coreCrypto), what).toMatch(reason);
  });

  it('binds every sealed chunk to its header and place: a chunk moved into another checkpoint does not open', async () => {
    const big = cutCheckpoint(foldAll(ops), frontierOf(ops), publisher).file;
    const other = cutCheckpoint(foldAll(ops.slice(0, 60)), frontierOf(ops.slice(0, 60)), publisher).file;
    const trust = (header: CheckpointHeader) => headerProblem(header, publisher.keyring, keys, coreCrypto);
    const open = (file: CheckpointFile) =>
      openCheckpoint({ header: file.header, chunks: iterate(file.chunks) }, publisher.keyring, coreCrypto, trust);
    expect((await open(big)).state.stateHash()).toBe(foldAll(ops).stateHash());
    await expect(open({ header: big.header, chunks: [other.chunks[0]!, ...big.chunks.slice(1)] })).rejects.toMatchObject({
      code: 'decrypt_failed',
    });
  });

  it('digests chunks with a key: the same plaintext under two scope keys gives unrelated digests, neither its SHA-256', () => {
    const state = foldAll(ops);
    const mine = cutCheckpoint(state, frontierOf(ops), publisher).header.chunks[0]!.digest;
    const theirs = cutCheckpoint(state, frontierOf(ops), {
      ...publisher,
      keyring: new Keyring([scopeKeyFromBytes('personal', new Uint8Array(32).fill(9))]),
    }).header.chunks[0]!.digest;
    const plain = assembleCheckpoint(state, frontierOf(ops), coreCrypto);
    expect(mine).not.toBe(theirs);
    expect(mine).not.toBe(plain.header.chunks[0]!.digest);
    expect(plain.header.chunks[0]!.digest).toBe(coreCrypto.sha256Hex(plain.chunks[0]!));
  });
});

describe('anchoring a tail to a checkpoint', () => {
  const device = new TestDevice('laptop', 1);
  const chain = Array.from({ length: 5 }, (_, i) => device.op('knowledge', { id: `k${i}` }));
  const frontier = frontierOf(chain.slice(0, 3));

  it('accepts the ops that continue the checkpoint head', () => {
    const result = anchorTail(frontier, device.id, chain.slice(3), device.publicKey, coreCrypto);
    expect(result).toMatchObject({ ok: true, check: { error: null } });
  });

  it('names a tail that does not continue the head an anchor mismatch', () => {
    const result = anchorTail(frontier, device.id, chain.slice(4), device.publicKey, coreCrypto);
    expect(result).toMatchObject({ ok: false, code: 'anchor_mismatch' });
  });

  it('names a truncated tail of a device the checkpoint does not know unanchored', () => {
    const result = anchorTail(new Map(), device.id, chain.slice(3), device.publicKey, coreCrypto);
    expect(result).toMatchObject({ ok: false, code: 'unanchored' });
  });
});

describe('roster and stable frontier', () => {
  const DAY = 86_400_000;
  const a = 'device-a' as DeviceId;
  const b = 'device-b' as DeviceId;
  const entry = (device: DeviceId, lastSeen: number, acked: Record<string, number>): Omit<RosterEntry, 'status'> => ({
    device_id: device,
    public_key: 'k',
    added_ms: 0,
    last_seen_ms: lastSeen,
    acked: new Map(Object.entries(acked)) as Map<DeviceId, number>,
  });

  it('takes the minimum of what active devices acked', () => {
    const roster = withStatus([entry(a, 100, { [a]: 9, [b]: 4 }), entry(b, 100, { [a]: 6, [b]: 8 })], new Map(), 200, 30 * DAY);
    expect(stableFrontier(roster)).toEqual(
      new Map([
        [a, 6],
        [b, 4],
      ]),
    );
  });

  it('stops counting a device silent past the eviction horizon', () => {
    const now = 40 * DAY;
    const roster = withStatus([entry(a, now, { [a]: 9, [b]: 4 }), entry(b, 5 * DAY, { [a]: 1, [b]: 4 })], new Map(), now, 30 * DAY);
    expect(roster.map((r) => r.status)).toEqual(['active', 'evicted']);
    expect(stableFrontier(roster).get(a)).toBe(9);
  });

  it('keeps a returning straggler evicted until it holds everything the relay collected', () => {
    const floor = new Map([[a, 8]]);
    const behind = withStatus([entry(a, 100, { [a]: 9 }), entry(b, 100, { [a]: 3 })], floor, 100, 30 * DAY);
    expect(behind[1]!.status).toBe('evicted');
    const caughtUp = withStatus([entry(a, 100, { [a]: 9 }), entry(b, 100, { [a]: 7 })], floor, 100, 30 * DAY);
    expect(caughtUp[1]!.status).toBe('active');
  });
});
