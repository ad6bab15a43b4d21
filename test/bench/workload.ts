import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ENVELOPE_ALG, ENVELOPE_VERSION } from '../../src/crypto/envelope.js';
import type { FoldOp } from '../../src/fold/fold-op.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import type { JournalEntry } from '../../src/journal/journal.js';
import { HlcClock } from '../../src/oplog/hlc.js';
import { parseDeviceId, type OpId } from '../../src/oplog/ids.js';
import { opIdOf, type OpRecord } from '../../src/oplog/op-record.js';
import type { Surface } from '../../src/oplog/surface.js';
import type { JsonObject } from '../../src/util/json.js';
import { coreCrypto } from '../helpers/test-device.js';

/**
 * Benchmark workloads: mixed surfaces with ~200-byte payloads, key collisions in the set and
 * register tiers, conversations of many turns, and a trickle of intents.
 */
const FILLER = 'The quick brown fox jumps over the lazy dog while the relay keeps every op in order; '.repeat(3);

export function payloadFor(i: number): [Surface, JsonObject] {
  const text = FILLER.slice(0, 120 + (i % 40));
  switch (i % 20) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4:
      return ['knowledge', { id: `k-${i % 400_000}`, text, n: i }];
    case 5:
    case 6:
      return ['skill', { id: `s-${i}`, text, n: i }];
    case 7:
      return ['trajectory', { id: `t-${i}`, text, n: i }];
    case 8:
      return ['run', { id: `r-${i}`, text, n: i }];
    case 9:
    case 10:
    case 11:
    case 12:
      return ['conversation', { conversation_id: `c-${i % 1000}`, role: i % 2 ? 'user' : 'assistant', content: text, timestamp: i }];
    case 13:
      return ['routing', { route: `route-${i % 100}`, text }];
    case 14:
    case 15:
      return ['declagent', { id: `a-${i % 50_000}`, text, n: i }];
    case 16:
      return ['registry:tools', { id: `tool-${i % 50_000}`, text, n: i }];
    case 17:
      return [
        'intent',
        {
          id: `run-${i}`,
          agent_id: `agent-${i % 100}`,
          epoch: Math.floor(i / 1000),
          status: (['pending', 'committed', 'failed'] as const)[i % 3]!,
        },
      ];
    default:
      return ['knowledge', { id: `u-${i}`, text, n: i }];
  }
}

/**
 * Ops for the fold benchmark: plaintext payloads, unique op ids, stamps from several devices.
 * (The fold takes ops whose chains and signatures were already verified, so ids need only be distinct.)
 */
export function foldOps(count: number, start = 0, devices = 4): FoldOp[] {
  const ids = Array.from({ length: devices }, (_, d) => parseDeviceId(`bench-${d}`));
  const ops: FoldOp[] = new Array<FoldOp>(count);
  for (let n = 0; n < count; n++) {
    const i = start + n;
    const device = ids[i % devices]!;
    const [surface, payload] = payloadFor(i);
    const hex = (i + 1).toString(16).padStart(16, '0');
    ops[n] = {
      op_id: `op-${hex.repeat(4)}` as OpId,
      device_id: device,
      hlc: { wall_ms: 1_700_000_000_000 + Math.floor(i / 7), counter: i % 7, device_id: device },
      scope: 'personal',
      surface,
      payload,
    };
  }
  return ops;
}

/**
 * A real chain for one device, as a journal holds it: payload sealed in an envelope-shaped
 * object (random bytes of the ciphertext's length; nothing here decrypts), op ids computed,
 * and a placeholder signature of the real length (reopening a journal checks hashes, not signatures).
 */
export function* chainEntries(
  deviceName: string,
  count: number,
  payloadOf: (i: number) => [Surface, JsonObject] = payloadFor,
): Generator<{ op: OpRecord; plain: JsonObject }> {
  const device = parseDeviceId(deviceName);
  let wall = 1_700_000_000_000;
  const clock = new HlcClock(device, () => wall);
  let prev: OpId | null = null;
  const sig = randomBytes(64).toString('base64url');
  for (let seq = 0; seq < count; seq++) {
    if (seq % 10 === 0) wall++;
    const [surface, plain] = payloadOf(seq);
    const ctLength = Buffer.byteLength(JSON.stringify(plain)) + 16;
    const payload = {
      v: ENVELOPE_VERSION,
      alg: ENVELOPE_ALG,
      kid: 'k-0123456789abcdef',
      nonce: randomBytes(24).toString('base64url'),
      ct: randomBytes(ctLength).toString('base64url'),
    };
    const body = { device_id: device, seq, prev, hlc: clock.tick(), scope: 'personal' as const, surface, payload };
    const op_id = opIdOf(body, coreCrypto);
    yield { op: { op_id, ...body, sig }, plain };
    prev = op_id;
  }
}

/** Writes `entries` as the journal of a data directory for `device`, in batches of 10 000. */
export async function writeJournal(
  dataDir: string,
  device: string,
  entries: Iterable<{ op: OpRecord; plain: JsonObject }>,
  onBatch: (written: number) => void = () => {},
): Promise<void> {
  await mkdir(dataDir, { recursive: true });
  const { journal } = await FileJournal.open(join(dataDir, 'journal.log'), parseDeviceId(device), () => {});
  let batch: JournalEntry[] = [];
  let written = 0;
  for (const { op, plain } of entries) {
    batch.push({ kind: 'op', op, plain });
    if (batch.length === 10_000) {
      await journal.append(batch);
      written += batch.length;
      batch = [];
      onBatch(written);
    }
  }
  if (batch.length > 0) await journal.append(batch);
  await journal.close();
}
