import { describe, expect, it } from 'vitest';
import { FoldState } from '../../src/fold/fold-state.js';
import type { OpRecord } from '../../src/oplog/op-record.js';
import { coreCrypto, TestDevice } from '../helpers/test-device.js';

function foldAll(...ops: OpRecord[]): FoldState {
  const state = new FoldState(coreCrypto);
  for (const op of ops) state.apply(op);
  return state;
}

function devices() {
  let wallA = 1000;
  let wallB = 1000;
  const a = new TestDevice('device-a', 1, () => wallA);
  const b = new TestDevice('device-b', 2, () => wallB);
  return { a, b, setA: (w: number) => (wallA = w), setB: (w: number) => (wallB = w) };
}

describe('fold tiers', () => {
  it('grow-only set: on a key collision the earliest (hlc, op_id) wins, whatever the arrival order', () => {
    const { a, b, setA, setB } = devices();
    setB(2000);
    const later = b.op('knowledge', { id: 'k', text: 'later' });
    setA(1500);
    const earlier = a.op('knowledge', { id: 'k', text: 'earlier' });
    expect(foldAll(later, earlier).record('knowledge', 'k')?.payload.text).toBe('earlier');
    expect(foldAll(earlier, later).record('knowledge', 'k')?.payload.text).toBe('earlier');
  });

  it('register: the latest (hlc, op_id) wins, and a tombstone is a record marked deleted', () => {
    const { a, b, setB } = devices();
    const first = a.op('declagent', { id: 'agent', model: 'm1' });
    setB(5000);
    const deleted = b.op('declagent', { id: 'agent', deleted: true });
    const state = foldAll(deleted, first);
    expect(state.record('declagent', 'agent')).toMatchObject({ op_id: deleted.op_id, device_id: 'device-b', payload: { deleted: true } });
  });

  it('event stream: identical events are two events, read in (hlc, op_id) order; a re-delivered op is one', () => {
    const { a, b } = devices();
    const turn = { conversation_id: 'c1', role: 'user', content: 'hi', timestamp: 1 };
    const fromB = b.op('conversation', turn);
    const fromA = a.op('conversation', turn);
    const state = foldAll(fromB, fromA, fromB);
    expect(state.conversation('c1').map((r) => r.op_id)).toEqual(
      [fromA, fromB].sort((x, y) => (x.op_id < y.op_id ? -1 : 1)).map((o) => o.op_id),
    );
    expect(state.conversation('c1')).toHaveLength(2);
  });

  it('turns without a conversation id belong to the default conversation', () => {
    const { a } = devices();
    const state = foldAll(a.op('conversation', { role: 'user', content: 'x', timestamp: 1 }));
    expect(state.conversation('default')).toHaveLength(1);
  });

  it('keeps the winning op id, stamp, device and payload on every record', () => {
    const { a } = devices();
    const op = a.op('registry:tools', { id: 'grep', v: 1 });
    expect(foldAll(op).record('registry:tools', 'grep')).toEqual({
      op_id: op.op_id,
      hlc: op.hlc,
      device_id: op.device_id,
      scope: 'personal',
      payload: op.payload,
    });
  });

  it('counts and skips a peer op whose payload misses a required field, on every device alike', () => {
    const { a } = devices();
    const bad = a.op('knowledge', { text: 'no id' });
    const state = foldAll(bad);
    expect(state.recordCount).toBe(0);
    expect(state.skipped.count).toBe(1);
    expect(state.skipped.recent[0]?.reason).toContain('payload.id');
  });

  it('pages keyed records in key order with a cursor', () => {
    const { a } = devices();
    const state = foldAll(...['c', 'a', 'b', 'd'].map((id) => a.op('skill', { id })));
    const first = state.page('skill', null, 3);
    expect(first.items.map((r) => r.key)).toEqual(['a', 'b', 'c']);
    const second = state.page('skill', first.next, 3);
    expect(second).toMatchObject({ items: [{ key: 'd' }], next: null });
  });
});

describe('intent ledger', () => {
  const intent = (d: TestDevice, run: string, epoch: number, status: string, agent = 'agent-1') =>
    d.op('intent', { id: run, agent_id: agent, epoch, status });

  it('fences a pending intent below the highest epoch seen for its agent', () => {
    const { a, b } = devices();
    const state = foldAll(intent(a, 'run-1', 1, 'pending'), intent(b, 'run-2', 2, 'pending'));
    expect(state.run('agent-1', 'run-1')?.status).toBe('fenced');
    expect(state.run('agent-1', 'run-2')?.status).toBe('pending');
    expect(state.agentEpoch('agent-1')).toBe(2);
  });

  it('never reverts a committed run: later pending and failed intents do not replace it', () => {
    const { a } = devices();
    const committed = intent(a, 'run-1', 1, 'committed');
    const state = foldAll(committed, intent(a, 'run-1', 3, 'pending'), intent(a, 'run-1', 4, 'failed'));
    expect(state.run('agent-1', 'run-1')).toMatchObject({ status: 'committed', op_id: committed.op_id, epoch: 1 });
  });

  it('keeps the committed record of the current epoch when a zombie commits the same run late at a stale epoch', () => {
    const { a, b, setA } = devices();
    const byB = intent(b, 'run-1', 2, 'committed');
    setA(500);
    const zombie = intent(a, 'run-1', 1, 'committed');
    for (const order of [
      [byB, zombie],
      [zombie, byB],
    ]) {
      expect(foldAll(...order).run('agent-1', 'run-1')).toMatchObject({ status: 'committed', op_id: byB.op_id, device_id: 'device-b' });
    }
  });

  it("keeps runs of different agents apart: one agent committing run r1 leaves another agent's r1 alone", () => {
    const { a, b } = devices();
    const state = foldAll(intent(a, 'r1', 1, 'committed', 'agent-x'), intent(b, 'r1', 1, 'pending', 'agent-y'));
    expect(state.run('agent-x', 'r1')?.status).toBe('committed');
    expect(state.run('agent-y', 'r1')).toMatchObject({ status: 'pending', agent_id: 'agent-y' });
    expect(state.page('intent', null, 10).items.map((r) => r.key)).toEqual(['agent-x/r1', 'agent-y/r1']);
  });

  it('lets committed outrank failed, and failed outrank pending', () => {
    const { a, b } = devices();
    expect(foldAll(intent(a, 'r', 1, 'committed'), intent(b, 'r', 1, 'failed')).run('agent-1', 'r')?.status).toBe('committed');
    expect(foldAll(intent(a, 'r', 1, 'pending'), intent(b, 'r', 1, 'failed')).run('agent-1', 'r')?.status).toBe('failed');
  });

  it('remembers the highest epoch even when the intent that carried it lost its run', () => {
    const { a } = devices();
    const state = foldAll(intent(a, 'r', 5, 'pending'), intent(a, 'r', 3, 'committed'));
    expect(state.run('agent-1', 'r')?.status).toBe('committed');
    expect(state.agentEpoch('agent-1')).toBe(5);
  });

  it('refuses intents outside the personal scope', () => {
    const { a } = devices();
    const state = foldAll(a.op('intent', { id: 'r', agent_id: 'x', epoch: 1, status: 'pending' }, { org: 'acme' }));
    expect(state.skipped.count).toBe(1);
  });
});

describe('state hash', () => {
  it('differs between different op-sets and is stable while nothing changes', () => {
    const { a } = devices();
    const one = a.op('knowledge', { id: 'x' });
    const state = foldAll(one);
    const hash = state.stateHash();
    expect(state.stateHash()).toBe(hash);
    state.apply(one);
    expect(state.stateHash()).toBe(hash);
    state.apply(a.op('knowledge', { id: 'y' }));
    expect(state.stateHash()).not.toBe(hash);
    expect(hash).toMatch(/^sh-[0-9a-f]{64}$/);
  });
});

describe('state hash after an epoch-only change', () => {
  it('moves when an intent raises its agent epoch without winning its run', () => {
    const a = new TestDevice('device-a', 1);
    const state = foldAll(a.op('intent', { id: 'r', agent_id: 'agent-0', epoch: 0, status: 'failed' }));
    const before = state.stateHash();
    expect(state.apply(a.op('intent', { id: 'r', agent_id: 'agent-0', epoch: 1, status: 'pending' }))).toBe('replaced');
    expect(state.run('agent-0', 'r')?.status).toBe('failed');
    expect(state.agentEpoch('agent-0')).toBe(1);
    expect(state.stateHash()).not.toBe(before);
  });
});
