import type { ChangeEvent } from '../session/session-reports.js';
import type { JsonObject } from '../util/json.js';
import { compareStrings } from '../util/ordered.js';
import type { Connection } from './method.js';
import type { Merge } from './peer.js';

/**
 * The `sync.changed` notification (proposals/rpc.md §Change feed): what one connection hears of a
 * change, or null when it is not subscribed or none of the surfaces it asked for changed (a
 * rebase is always told). `coalesced` counts the changes one notification stands for.
 */
export function changedFor(event: ChangeEvent, connection: Connection): JsonObject | null {
  if (!connection.subscribed) return null;
  const wanted = connection.surfaces;
  const surfaces = wanted ? event.surfaces.filter((surface) => wanted.has(surface)) : event.surfaces;
  if (surfaces.length === 0 && !event.rebased) return null;
  return {
    change: event.change,
    surfaces: [...surfaces],
    origins: [...event.origins],
    folded: event.folded,
    state_hash: event.state_hash,
    rebased: event.rebased,
    coalesced: 1,
  };
}

/**
 * A client that lags gets one `sync.changed` for the changes it did not read: the union of their
 * surfaces and origins, their ops summed, the newest change number and state hash. It never
 * misses that something changed, only how many notifications said so.
 */
export const mergeChanged: Merge = (older, newer) => ({
  change: newer.change ?? null,
  surfaces: union(older.surfaces, newer.surfaces),
  origins: union(older.origins, newer.origins),
  folded: Number(older.folded) + Number(newer.folded),
  state_hash: newer.state_hash ?? null,
  rebased: older.rebased === true || newer.rebased === true,
  coalesced: Number(older.coalesced) + Number(newer.coalesced),
});

function union(a: unknown, b: unknown): string[] {
  const strings = (value: unknown) => (Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : []);
  return [...new Set([...strings(a), ...strings(b)])].sort(compareStrings);
}
