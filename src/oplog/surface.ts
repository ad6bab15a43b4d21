import { OpsyncError } from '../util/opsync-error.js';

/**
 * What an op is about. The surface decides the fold tier (proposals/fold.md). Anything outside
 * this closed list is refused, never defaulted.
 */
export type Surface =
  'conversation' | 'knowledge' | 'skill' | 'trajectory' | 'run' | 'routing' | 'declagent' | 'intent' | `registry:${string}`;

export type Tier = 'set' | 'events' | 'lww' | 'intent';

const TIERS: Readonly<Record<string, Tier>> = {
  knowledge: 'set',
  skill: 'set',
  trajectory: 'set',
  run: 'set',
  conversation: 'events',
  routing: 'events',
  declagent: 'lww',
  intent: 'intent',
};

const REGISTRY = /^registry:[a-z0-9_-]{1,64}$/;

export function isSurface(value: unknown): value is Surface {
  return typeof value === 'string' && (Object.hasOwn(TIERS, value) || REGISTRY.test(value));
}

export function parseSurface(value: unknown, field = 'surface'): Surface {
  if (isSurface(value)) return value;
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
  throw new OpsyncError(
    'invalid_surface',
    `${field} ${shown} is not a surface: use one of ${Object.keys(TIERS).join(', ')} or registry:<kind> (kind: 1 to 64 of a-z, 0-9, "_", "-").`,
    { field },
  );
}

export function tierOf(surface: Surface): Tier {
  return TIERS[surface] ?? 'lww';
}
