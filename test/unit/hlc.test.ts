import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareHlc, HlcClock, type Hlc } from '../../src/oplog/hlc.js';
import { parseDeviceId } from '../../src/oplog/ids.js';

const A = parseDeviceId('device-a');
const B = parseDeviceId('device-b');

describe('hybrid logical clock', () => {
  it('ticks at the wall clock when it moves forward, with counter 0', () => {
    let now = 1000;
    const clock = new HlcClock(A, () => now);
    expect(clock.tick()).toEqual({ wall_ms: 1000, counter: 0, device_id: A });
    now = 1005;
    expect(clock.tick()).toEqual({ wall_ms: 1005, counter: 0, device_id: A });
  });

  it('counts up when the wall clock stands still or goes backwards', () => {
    let now = 1000;
    const clock = new HlcClock(A, () => now);
    clock.tick();
    expect(clock.tick()).toEqual({ wall_ms: 1000, counter: 1, device_id: A });
    now = 900;
    expect(clock.tick()).toEqual({ wall_ms: 1000, counter: 2, device_id: A });
  });

  it('ticks above an observed remote stamp even when the remote device id sorts higher', () => {
    const clock = new HlcClock(A, () => 1000);
    const remote: Hlc = { wall_ms: 5000, counter: 7, device_id: B };
    clock.observe(remote);
    const next = clock.tick();
    expect(compareHlc(next, remote)).toBeGreaterThan(0);
    expect(next).toEqual({ wall_ms: 5000, counter: 8, device_id: A });
  });

  it('reports how far a remote stamp is ahead of the local wall clock', () => {
    const clock = new HlcClock(A, () => 1000);
    expect(clock.skewAhead({ wall_ms: 61_001, counter: 0, device_id: B })).toBe(60_001);
    expect(clock.skewAhead({ wall_ms: 10, counter: 0, device_id: B })).toBe(0);
  });

  it('resumes above its last stamp after a restart with a clock that went backwards', () => {
    const clock = new HlcClock(A, () => 10, { wall_ms: 1000, counter: 4, device_id: A });
    expect(clock.tick()).toEqual({ wall_ms: 1000, counter: 5, device_id: A });
  });

  it('borrows a millisecond instead of overflowing the counter', () => {
    const clock = new HlcClock(A, () => 1000, { wall_ms: 1000, counter: 0xffffffff, device_id: A });
    expect(clock.tick()).toEqual({ wall_ms: 1001, counter: 0, device_id: A });
  });

  it('issues strictly increasing stamps never behind the wall clock, whatever the wall clock and peers do', () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant('tick' as const), wall: fc.integer({ min: 0, max: 10_000 }) }),
      fc.record({
        kind: fc.constant('observe' as const),
        wall: fc.integer({ min: 0, max: 10_000 }),
        counter: fc.integer({ min: 0, max: 50 }),
      }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 200 }), (steps) => {
        let now = 0;
        const clock = new HlcClock(A, () => now);
        let highest: Hlc | null = null;
        for (const s of steps) {
          now = s.wall;
          if (s.kind === 'observe') {
            const remote: Hlc = { wall_ms: s.wall, counter: s.counter, device_id: B };
            clock.observe(remote);
            if (!highest || compareHlc(remote, highest) > 0) highest = remote;
          } else {
            const stamp = clock.tick();
            expect(stamp.wall_ms).toBeGreaterThanOrEqual(now);
            if (highest) expect(compareHlc(stamp, highest)).toBeGreaterThan(0);
            highest = stamp;
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
