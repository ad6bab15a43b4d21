import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assembleCheckpoint, restoreCheckpoint } from '../../src/checkpoint/checkpoint.js';
import { FoldState } from '../../src/fold/fold-state.js';
import type { DeviceId } from '../../src/oplog/ids.js';
import type { ChainHead, OpRecord } from '../../src/oplog/op-record.js';
import { materialize, opSpecs, redeliver } from '../helpers/op-sets.js';
import { scaled, scaledTimeout, seededRandom } from '../helpers/seeded.js';
import { coreCrypto } from '../helpers/test-device.js';

type Fold = (ops: readonly OpRecord[]) => FoldState;

const fold: Fold = (ops) => {
  const state = new FoldState(coreCrypto);
  for (const op of ops) state.apply(op);
  return state;
};

/** The whole observable state, canonically: the checkpoint chunks of a state cut anywhere. */
function snapshot(state: FoldState): { hash: string; chunks: readonly string[] } {
  return { hash: state.stateHash(), chunks: assembleCheckpoint(state, new Map(), coreCrypto).chunks };
}

/** Law: any order, duplication or grouping of the same op-set folds to the same state. */
function orderIndependence(foldWith: Fold) {
  return fc.property(opSpecs(), fc.integer(), fc.integer({ min: 1, max: 8 }), (specs, seed, groups) => {
    const ops = materialize(specs);
    const random = seededRandom(seed);
    const delivered = redeliver(ops, random);
    const size = Math.ceil(delivered.length / groups);
    const batches = Array.from({ length: groups }, (_, i) => delivered.slice(i * size, (i + 1) * size)).reverse();
    const grouped = foldWith(batches.flat());
    expect(snapshot(foldWith(delivered))).toEqual(snapshot(foldWith(ops)));
    expect(snapshot(grouped)).toEqual(snapshot(foldWith(ops)));
  });
}

describe('fold laws', () => {
  it(
    'any permutation, duplication or grouping of an op-set gives the same state and state_hash',
    () => {
      fc.assert(orderIndependence(fold), { numRuns: scaled(400) });
    },
    scaledTimeout(),
  );

  it(
    'a checkpoint at any cut plus the ops after it folds to the state of all ops',
    () => {
      fc.assert(
        fc.property(
          opSpecs(),
          fc.array(fc.integer({ min: -1, max: 30 }), { minLength: 3, maxLength: 3 }),
          fc.integer(),
          (specs, cuts, seed) => {
            const ops = materialize(specs);
            const devices = [...new Set(ops.map((op) => op.device_id))].sort();
            const cutOf = new Map<DeviceId, number>(devices.map((d, i) => [d, cuts[i]!]));
            const below = ops.filter((op) => op.seq <= cutOf.get(op.device_id)!);
            const above = ops.filter((op) => op.seq > cutOf.get(op.device_id)!);
            const frontier = new Map<DeviceId, ChainHead>();
            for (const op of below) frontier.set(op.device_id, { seq: op.seq, op_id: op.op_id, hlc: op.hlc });

            const checkpoint = assembleCheckpoint(fold(below), frontier, coreCrypto);
            const resumed = restoreCheckpoint(checkpoint, coreCrypto);
            for (const op of redeliver(above, seededRandom(seed))) resumed.apply(op);
            expect(snapshot(resumed)).toEqual(snapshot(fold(ops)));
          },
        ),
        { numRuns: scaled(400) },
      );
    },
    scaledTimeout(),
  );

  it(
    'merging the states of two overlapping parts of an op-set gives the state of their union',
    () => {
      fc.assert(
        fc.property(opSpecs(), fc.integer(), (specs, seed) => {
          const ops = materialize(specs);
          const random = seededRandom(seed);
          // Each op goes to one part or the other, or to both; together they hold every op.
          const parts: [OpRecord[], OpRecord[]] = [[], []];
          for (const op of ops) {
            const roll = random();
            if (roll < 0.7) parts[0].push(op);
            if (roll >= 0.4) parts[1].push(op);
          }
          const merged = restoreCheckpoint(assembleCheckpoint(fold(parts[0]), new Map(), coreCrypto), coreCrypto);
          merged.merge(fold(parts[1]));
          expect(snapshot(merged)).toEqual(snapshot(fold(ops)));
        }),
        { numRuns: scaled(400) },
      );
    },
    scaledTimeout(),
  );

  it('is sensitive enough to fail for a fold that lets the first arrival win a register', () => {
    const firstArrivalWins: Fold = (ops) => {
      const state = new FoldState(coreCrypto);
      for (const op of ops) {
        if (op.surface === 'declagent' && state.record('declagent', op.payload.id as string)) continue;
        state.apply(op);
      }
      return state;
    };
    expect(() => fc.assert(orderIndependence(firstArrivalWins), { numRuns: 300, seed: 42 })).toThrow(/Property failed/);
  });
});
