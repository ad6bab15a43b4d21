import { parseScope, type Scope } from '../oplog/scope.js';
import { parseSurface } from '../oplog/surface.js';
import { OpsyncError } from '../util/opsync-error.js';
import type { Session } from '../session/session.js';
import type { JsonObject } from '../util/json.js';
import { LIMITS } from '../util/limits.js';
import { defineMethod, resultObject } from './method.js';
import { arrayOf, integer, jsonObject, object, optional, parsed, required, string } from './schema.js';

/** Daemon services the sync methods need beyond the session. */
/** What `sync.status` says of the daemon beside the session's status. */
export interface DaemonFacts {
  readonly version: string;
  readonly relay: string;
  readonly lease_backend: string;
  readonly url: string | null;
  readonly uptime_ms: number;
}

export interface SyncServices {
  readonly session: Session;
  /** Static facts about the daemon for sync.status. */
  info(): DaemonFacts;
  /** Transport and endpoint counters for sync.stats. */
  rpcStats(): JsonObject;
  /** The status page's address with a fresh one-time code. */
  statusLink(): { url: string; expires_at_ms: number };
  importKey(keyFileText: string): Promise<{ scope: string; kid: string; folded: number }>;
  exportKey(scope: Scope): string;
}

const surface = parsed(
  { type: 'string', description: 'conversation, knowledge, skill, trajectory, run, routing, declagent, intent or registry:<kind>' },
  (value, path) => parseSurface(value, path),
);
const scope = parsed(
  { oneOf: [{ const: 'personal' }, { type: 'object', properties: { org: { type: 'string' } }, required: ['org'] }] },
  (value, path) => parseScope(value, path),
);
const orgName = string({ maxLength: 64, pattern: /^[a-z0-9][a-z0-9_-]{0,63}$/ });
const hlc = resultObject({ wall_ms: { type: 'integer' }, counter: { type: 'integer' }, device_id: { type: 'string' } });
const none = object({});

export function syncMethods(services: SyncServices) {
  const { session } = services;
  return [
    defineMethod({
      name: 'sync.status',
      summary: 'Device, state hash, frontiers, base checkpoint, roster and counts of quarantined, undecryptable and ignored items.',
      params: none,
      result: resultObject({
        device_id: { type: 'string' },
        state_hash: { type: 'string' },
        journal_frontier: { type: 'object' },
        stable_frontier: { type: 'object' },
        base_checkpoint: { type: ['string', 'null'] },
        roster: { type: 'array' },
        counts: { type: 'object' },
      }),
      handler: () => ({ ...session.status(), ...services.info() }),
    }),
    defineMethod({
      name: 'sync.hash_state',
      summary: 'The state hash and record count: a cheap drift check between devices.',
      params: none,
      result: resultObject({ state_hash: { type: 'string' }, records: { type: 'integer' } }),
      handler: () => ({ state_hash: session.state.stateHash(), records: session.state.recordCount }),
    }),
    defineMethod({
      name: 'sync.append',
      summary: 'Appends an op; answers once it is durable. A top-level org means scope {org}.',
      params: object({
        surface: required(surface, 'what the op is about; decides its fold tier'),
        payload: required(jsonObject(LIMITS.maxJsonDepth), 'the record; required fields depend on the surface'),
        scope: optional(scope, 'who may read it: "personal" (default) or {"org": name}'),
        org: optional(orgName, 'shorthand for scope {"org": org}'),
      }),
      result: resultObject({ op_id: { type: 'string' }, seq: { type: 'integer' }, hlc }),
      errors: ['invalid_surface', 'invalid_scope', 'invalid_payload', 'payload_too_large', 'key_missing', 'journal_failed'],
      handler: (p) => session.append({ surface: p.surface, payload: p.payload, scope: scopeOf(p.scope, p.org) }),
    }),
    defineMethod({
      name: 'sync.pump',
      summary: 'One sync round now: push own ops, pull, verify, journal, fold, ack.',
      params: none,
      result: resultObject({
        pushed: { type: 'integer' },
        push_deduped: { type: 'integer' },
        folded: { type: 'integer' },
        acked: { type: 'integer' },
        state_hash: { type: 'string' },
        rebased: { type: 'boolean' },
      }),
      errors: ['relay_unavailable', 'relay_gap', 'relay_fork', 'chain_broken'],
      handler: () => session.pump(),
    }),
    defineMethod({
      name: 'sync.checkpoint',
      summary: 'Publishes a checkpoint of the state at the stable frontier, when there is something new to cut.',
      params: none,
      result: resultObject({ published: { type: 'boolean' }, checkpoint_hash: { type: 'string' }, reason: { type: 'string' } }),
      handler: () => session.checkpoint(),
    }),
    defineMethod({
      name: 'sync.compact',
      summary: "Compacts the journal behind the latest checkpoint and lets the relay drop this device's covered ops.",
      params: none,
      result: resultObject({
        compacted: { type: 'boolean' },
        base_checkpoint: { type: 'string' },
        relay_dropped_ops: { type: 'integer' },
        reason: { type: 'string' },
      }),
      handler: () => session.compact(),
    }),
    defineMethod({
      name: 'sync.rebase',
      summary:
        'Rebases onto the latest checkpoint, keeping own ops it does not cover; one that covers some device less far than the base is first merged with it, and the merge published.',
      params: none,
      result: resultObject({ rebased: { type: 'boolean' }, base_checkpoint: { type: ['string', 'null'] }, reason: { type: 'string' } }),
      errors: ['device_cloned', 'checkpoint_invalid', 'anchor_mismatch', 'unanchored'],
      handler: () => session.rebase(),
    }),
    defineMethod({
      name: 'sync.records',
      summary: 'Folded records of a surface, paged: keyed surfaces in key order, event streams in (hlc, op_id) order, intents by run id.',
      params: object({
        surface: required(surface, 'the surface to read'),
        after: optional(string({ maxLength: LIMITS.maxRecordKeyLength }), 'the cursor returned as `next` by the previous page'),
        limit: optional(integer({ min: 1, max: 1000 }), 'records per page (default 100)'),
      }),
      result: resultObject({ records: { type: 'array' }, next: { type: ['string', 'null'] } }),
      handler: (p) => {
        const page = session.state.page(p.surface, p.after ?? null, p.limit ?? 100);
        return { records: page.items, next: page.next };
      },
    }),
    defineMethod({
      name: 'sync.subscribe',
      summary:
        'Subscribes this connection to sync.changed: a notification after every change to the folded state — appends by any connection, ops folded from other devices, a rebase — naming the surfaces that changed (proposals/rpc.md §Change feed).',
      params: object({
        surfaces: optional(arrayOf(surface, 64), 'only changes to these surfaces (default: all); a rebase is always told'),
      }),
      result: resultObject({ subscribed: { type: 'boolean' } }),
      handler: (p, call) => {
        call.connection.subscribed = true;
        call.connection.surfaces = p.surfaces ? new Set(p.surfaces) : null;
        return { subscribed: true };
      },
    }),
    defineMethod({
      name: 'sync.unsubscribe',
      summary: 'Stops sync.changed notifications on this connection.',
      params: none,
      result: resultObject({ subscribed: { type: 'boolean' } }),
      handler: (_p, call) => {
        call.connection.subscribed = false;
        return { subscribed: false };
      },
    }),
    defineMethod({
      name: 'sync.verify',
      summary: 'Re-reads and re-verifies the whole journal: checksums, chains, op ids, head signatures and cached plaintexts.',
      params: none,
      result: resultObject({
        ok: { type: 'boolean' },
        entries: { type: 'integer' },
        problems: { type: 'array', items: { type: 'string' } },
      }),
      handler: () => session.verify(),
    }),
    defineMethod({
      name: 'sync.stats',
      summary: 'Counters and latency percentiles of the session and the RPC server.',
      params: none,
      result: resultObject({ counters: { type: 'object' }, latencies: { type: 'object' }, rpc: { type: 'object' } }),
      handler: () => ({ counters: session.stats.counters, latencies: session.stats.latencies(), rpc: services.rpcStats() }),
    }),
    defineMethod({
      name: 'sync.status_link',
      summary:
        "The status page's address with a one-time code that opens it once, within two minutes, in one browser (`opsync status --web`).",
      params: none,
      result: resultObject({ url: { type: 'string' }, expires_at_ms: { type: 'integer' } }),
      errors: ['config_invalid'],
      handler: () => services.statusLink(),
    }),
    defineMethod({
      name: 'sync.import_key',
      summary: 'Imports a scope key (the text of an exported key file), keeps it in the data directory and folds the ops it opens.',
      params: object({
        key: required(string({ maxLength: 4096 }), 'the key file text, as sync.export_key or `opsync key export` print it'),
      }),
      result: resultObject({ scope: { type: 'string' }, kid: { type: 'string' }, folded: { type: 'integer' } }),
      errors: ['key_invalid'],
      handler: (p) => services.importKey(p.key),
    }),
    defineMethod({
      name: 'sync.export_key',
      summary: 'The key file text of a scope key, to import on another device.',
      params: object({ scope: optional(scope, '"personal" (default) or {"org": name}') }),
      result: resultObject({ key: { type: 'string' } }),
      errors: ['key_missing'],
      handler: (p) => ({ key: services.exportKey(p.scope ?? 'personal') }),
    }),
  ];
}

function scopeOf(scope: Scope | undefined, org: string | undefined): Scope {
  if (org === undefined) return scope ?? 'personal';
  if (scope !== undefined && (scope === 'personal' || scope.org !== org)) {
    throw new OpsyncError('invalid_scope', 'params.scope and params.org disagree; give one of them.', { field: 'params.org' });
  }
  return { org };
}
