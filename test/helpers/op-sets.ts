import fc from 'fast-check';
import type { OpRecord } from '../../src/oplog/op-record.js';
import type { Surface } from '../../src/oplog/surface.js';
import type { JsonObject } from '../../src/util/json.js';
import { TestDevice } from './test-device.js';

/**
 * Random op-sets written by a few devices with clocks that tie, skew and stand still, over a
 * small key space so that set, register and ledger collisions are common.
 */
export interface OpSpec {
  readonly device: number;
  readonly advance: number;
  readonly kind: number;
  readonly key: number;
  readonly value: number;
}

const KINDS = 10;

export const opSpecs = (maxLength = 60): fc.Arbitrary<OpSpec[]> =>
  fc.array(
    fc.record({
      device: fc.integer({ min: 0, max: 2 }),
      advance: fc.integer({ min: 0, max: 3 }),
      kind: fc.integer({ min: 0, max: KINDS - 1 }),
      key: fc.integer({ min: 0, max: 3 }),
      value: fc.integer({ min: 0, max: 5 }),
    }),
    { minLength: 1, maxLength },
  );

/** Materializes specs into signed, chained ops (all devices start their clocks at the same wall time). */
export function materialize(specs: readonly OpSpec[]): OpRecord[] {
  const walls = [1000, 1000, 1000];
  const devices = ['device-a', 'device-b', 'device-c'].map((id, i) => new TestDevice(id, i + 1, () => walls[i]!));
  return specs.map((spec) => {
    walls[spec.device]! += spec.advance;
    const [surface, payload] = payloadFor(spec);
    return devices[spec.device]!.op(surface, payload);
  });
}

function payloadFor({ kind, key, value }: OpSpec): [Surface, JsonObject] {
  const id = `k${key}`;
  switch (kind) {
    case 0:
      return ['knowledge', { id, v: value }];
    case 1:
      return ['skill', { id, v: value }];
    case 2:
      return ['declagent', { id, v: value }];
    case 3:
      return ['registry:tools', value === 0 ? { id, deleted: true } : { id, v: value }];
    case 4:
      return ['conversation', { conversation_id: `c${key % 2}`, role: 'user', content: `m${value}`, timestamp: value }];
    case 5:
      return ['routing', { route: value }];
    case 6:
    case 7:
      return [
        'intent',
        {
          id: `run-${key}`,
          agent_id: `agent-${value % 2}`,
          epoch: value,
          status: (['pending', 'committed', 'failed'] as const)[(key + value) % 3]!,
        },
      ];
    case 8:
      return ['knowledge', { text: 'no id: skipped on every device' }];
    default:
      return ['run', { id, v: value }];
  }
}

/** A shuffled copy with some ops repeated: the same op-set, delivered badly. */
export function redeliver(ops: readonly OpRecord[], random: () => number): OpRecord[] {
  const out = [...ops];
  for (const op of ops) if (random() < 0.3) out.push(op);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
