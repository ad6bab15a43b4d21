import type { DeviceId } from './ids.js';
import { isDeviceId } from './ids.js';
import { isJsonObject } from '../util/json.js';
import { compareNumbers, compareStrings } from '../util/ordered.js';

/**
 * Hybrid logical clock stamp. Total order by (wall_ms, counter, device_id).
 *
 * Why an HLC and not vector clocks: every fold rule needs a *total* order to break ties the
 * same way on every device, and an HLC gives one in constant space per op while staying close
 * to wall time (so "latest wins" means what a person expects). Causality between ops of
 * different devices is still respected: a device observes every stamp it folds, so anything
 * it writes afterwards sorts after what it has seen.
 */
export interface Hlc {
  readonly wall_ms: number;
  readonly counter: number;
  readonly device_id: DeviceId;
}

/** Counters live in 32 bits; past that the clock borrows a millisecond (still never behind wall time). */
const MAX_COUNTER = 0xffffffff;

export function compareHlc(a: Hlc, b: Hlc): number {
  return compareNumbers(a.wall_ms, b.wall_ms) || compareNumbers(a.counter, b.counter) || compareStrings(a.device_id, b.device_id);
}

export function isHlc(value: unknown): value is Hlc {
  if (!isJsonObject(value)) return false;
  const keys = Object.keys(value);
  return (
    keys.length === 3 &&
    Number.isSafeInteger(value.wall_ms) &&
    (value.wall_ms as number) >= 0 &&
    Number.isInteger(value.counter) &&
    (value.counter as number) >= 0 &&
    (value.counter as number) <= MAX_COUNTER &&
    isDeviceId(value.device_id)
  );
}

/**
 * The device's clock. `now` is injected (the pure core reads no clock).
 *
 * - `tick()` returns a stamp strictly greater than anything issued or observed, and never
 *   behind the wall clock reading;
 * - `observe(remote)` folds a remote stamp in so the next tick lands above it. Callers apply
 *   the forward-skew guard (`skewAhead`) *before* observing, so a peer with a clock far in the
 *   future can never drag this device's clock forward.
 */
export class HlcClock {
  private wall: number;
  private counter: number;

  constructor(
    readonly deviceId: DeviceId,
    private readonly now: () => number,
    last?: Hlc,
  ) {
    this.wall = last?.wall_ms ?? 0;
    this.counter = last?.counter ?? 0;
  }

  tick(): Hlc {
    const reading = this.now();
    if (reading > this.wall) {
      this.wall = reading;
      this.counter = 0;
    } else if (this.counter < MAX_COUNTER) {
      this.counter++;
    } else {
      this.wall++;
      this.counter = 0;
    }
    // Members in canonical order, so encoding the stamp need not sort them.
    return { counter: this.counter, device_id: this.deviceId, wall_ms: this.wall };
  }

  observe(remote: Hlc): void {
    if (remote.wall_ms > this.wall || (remote.wall_ms === this.wall && remote.counter > this.counter)) {
      this.wall = remote.wall_ms;
      this.counter = remote.counter;
    }
  }

  /** Milliseconds by which this clock's stamps run ahead of the wall clock now (0 when they do not). */
  aheadOfWall(): number {
    return Math.max(0, this.wall - this.now());
  }

  /** Milliseconds by which `remote` is ahead of the local wall clock (0 when it is not ahead). */
  skewAhead(remote: Hlc): number {
    return Math.max(0, remote.wall_ms - this.now());
  }
}
