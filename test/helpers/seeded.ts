/**
 * A small seeded generator (mulberry32) for simulations and randomized schedules, so every
 * run can be replayed from its printed seed.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed for a randomized test: OPSYNC_SEED when set, else a fresh one (printed on failure). */
export function testSeed(): number {
  const fromEnv = process.env.OPSYNC_SEED;
  return fromEnv ? Number(fromEnv) : Math.floor(Math.random() * 2 ** 31);
}

/** Scales randomized test effort: OPSYNC_LONG=<factor> runs every property and simulation that many times longer. */
export function scaled(runs: number): number {
  const factor = Number(process.env.OPSYNC_LONG ?? 1);
  return Math.max(1, Math.round(runs * (Number.isFinite(factor) && factor > 0 ? factor : 1)));
}

/** The time bound of a test whose work `scaled` lengthens: the suite's bound (vitest.config.ts), times the same factor. */
export function scaledTimeout(ms = 120_000): number {
  return scaled(ms);
}
