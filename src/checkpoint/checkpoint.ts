import { canonicalize } from '../oplog/canonical.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import { frontierToJson, parseFrontier, type Frontier } from '../oplog/frontier.js';
import { isHlc } from '../oplog/hlc.js';
import {
  isCheckpointHash,
  isDeviceId,
  isEpoch,
  isNameId,
  isOpId,
  type AgentId,
  type CheckpointHash,
  type DeviceId,
  type RunId,
} from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { scopeFromKey, scopeKey, type Scope } from '../oplog/scope.js';
import { isSurface } from '../oplog/surface.js';
import { FoldState, type StateHash } from '../fold/fold-state.js';
import type { IntentCandidate } from '../fold/intent-ledger.js';
import { INTENT_STATUSES, type IntentStatus } from '../fold/payload-rules.js';
import { isJsonObject, type JsonObject, type JsonValue } from '../util/json.js';
import { compareStrings } from '../util/ordered.js';

/**
 * Checkpoints, format version 2 (proposals/checkpoint.md; version 1 stays readable).
 *
 * A checkpoint is the fold state of exactly the ops at or below its frontier, cut into chunks
 * of at most CHUNK_ITEMS items and CHUNK_TEXT characters, each chunk belonging to one scope (so
 * each can be sealed with that scope's key). A chunk's text is the canonical JSON of one of
 * `{"records":[[surface, op_id, wall_ms, counter, device_id, payload], …]}` (by op_id),
 * `{"runs":[[run_id, agent_id, epoch, status, op_id, wall_ms, counter, device_id], …]}` (by run_id) or
 * `{"agents":[[agent_id, epoch], …]}` (by agent_id).
 *
 * `checkpoint_hash` = "ck-" + SHA-256 of the canonical `{v, frontier, scopes, state_hash, chunks}`,
 * where `chunks` lists each chunk's scope, item count and digest: it covers frontier, scopes and
 * state. A digest is keyed in version 2 (`ChunkDigest`; plain SHA-256 in version 1), and a
 * version-2 header carries its publisher's MAC and signature (`HeaderAuth`, checked in
 * src/crypto/checkpoint-auth.ts). Two devices that cut at the same frontier produce the same
 * chunks and the same hash; loading re-checks every digest, the checkpoint hash and the state hash.
 */
export const CHECKPOINT_VERSION = 2;
export type CheckpointVersion = 1 | typeof CHECKPOINT_VERSION;

/**
 * How a chunk's text is digested: in version 2 an HMAC under a key derived from the chunk's scope
 * key, so that the relay cannot confirm a guess of a chunk's content; tests of the pure core may
 * use the plain SHA-256, as version 1 did.
 */
export type ChunkDigest = (scope: string, text: string) => string;

/** Who published a version-2 header, and the proof: a MAC under the personal scope key (`kid`) and the publisher's signature. */
export interface HeaderAuth {
  readonly publisher: DeviceId;
  readonly kid: string;
  readonly mac: string;
  readonly sig: string;
}

/** Items per chunk: ~20 MiB of text for typical records. */
export const CHUNK_ITEMS = 65_536;
/**
 * Characters (UTF-16 code units) per chunk text: a chunk also ends before it would pass this,
 * so that large records (a tool result of 100 KiB is common) keep every chunk, and its sealed
 * base64 form, far below V8's 512 MiB string limit.
 */
export const CHUNK_TEXT = 16 * 2 ** 20;

export interface ChunkRef {
  readonly scope: string;
  readonly count: number;
  readonly digest: string;
}

export interface CheckpointHeader {
  readonly v: CheckpointVersion;
  readonly checkpoint_hash: CheckpointHash;
  readonly state_hash: StateHash;
  readonly frontier: Frontier;
  readonly scopes: readonly string[];
  readonly chunks: readonly ChunkRef[];
  /** Null for a version-1 header, and for a version-2 one not yet signed. */
  readonly auth: HeaderAuth | null;
}

export interface PlainCheckpoint {
  readonly header: CheckpointHeader;
  /** Chunk texts, in header order. */
  readonly chunks: readonly string[];
}

/** A checkpoint item with the key it is sorted by: op_id for records, run or agent id for the ledger. */
type Keyed = { key: string; item: JsonValue[] };

/** The state's records, runs and agents as checkpoint items, by scope (the ledger is personal). */
function sections(state: FoldState): Map<string, { records: Keyed[]; runs: Keyed[]; agents: Keyed[] }> {
  const byScope = new Map<string, { records: Keyed[]; runs: Keyed[]; agents: Keyed[] }>();
  const section = (scope: string) => {
    let s = byScope.get(scope);
    if (!s) {
      s = { records: [], runs: [], agents: [] };
      byScope.set(scope, s);
    }
    return s;
  };
  for (const r of state.allRecords()) {
    section(scopeKey(r.scope)).records.push({
      key: r.op_id,
      item: [r.surface, r.op_id, r.hlc.wall_ms, r.hlc.counter, r.device_id, r.payload],
    });
  }
  for (const run of state.allRuns()) {
    const item = [run.run_id, run.agent_id, run.epoch, run.status, run.op_id, run.hlc.wall_ms, run.hlc.counter, run.device_id];
    // By run id, then agent (two agents may share a run id): "\0" sorts below every id character,
    // so checkpoints of ledgers without shared run ids are cut exactly as before.
    section('personal').runs.push({ key: `${run.run_id}\0${run.agent_id}`, item });
  }
  for (const [agent, epoch] of state.allAgents()) section('personal').agents.push({ key: agent, item: [agent, epoch] });
  return byScope;
}

/**
 * The chunks of one kind of items, sorted by key: the canonical JSON of {kind: [items…]}, built
 * from each item's canonical text, cut at CHUNK_ITEMS items or CHUNK_TEXT characters.
 */
function chunkTexts(kind: string, items: Keyed[]): Array<{ text: string; count: number }> {
  items.sort((a, b) => compareStrings(a.key, b.key));
  const chunks: Array<{ text: string; count: number }> = [];
  let run: string[] = [];
  let length = 0;
  const cut = () => {
    chunks.push({ text: `{"${kind}":[${run.join(',')}]}`, count: run.length });
    run = [];
    length = 0;
  };
  for (const { item } of items) {
    const text = canonicalize(item);
    if (run.length === CHUNK_ITEMS || (run.length > 0 && length + text.length + 1 > CHUNK_TEXT - kind.length - 8)) cut();
    run.push(text);
    length += text.length + 1;
  }
  if (run.length > 0) cut();
  return chunks;
}

/**
 * Cuts `state` — which must be the fold of exactly the ops at or below `frontier` — into a
 * checkpoint. Deterministic: the same op-set gives byte-identical chunks and the same hash.
 */
export function assembleCheckpoint(
  state: FoldState,
  frontier: Frontier,
  crypto: Pick<CoreCrypto, 'sha256Hex'>,
  digest: ChunkDigest = plainDigest(crypto),
): PlainCheckpoint {
  const byScope = sections(state);
  const scopes = [...byScope.keys()].sort(compareStrings);
  const refs: ChunkRef[] = [];
  const texts: string[] = [];
  for (const scope of scopes) {
    const s = byScope.get(scope)!;
    for (const [kind, items] of [
      ['records', s.records],
      ['runs', s.runs],
      ['agents', s.agents],
    ] as const) {
      for (const { text, count } of chunkTexts(kind, items)) {
        texts.push(text);
        refs.push({ scope, count, digest: digest(scope, text) });
      }
    }
  }
  const stateHash = state.stateHash();
  const header: Omit<CheckpointHeader, 'checkpoint_hash' | 'auth'> = {
    v: CHECKPOINT_VERSION,
    state_hash: stateHash,
    frontier,
    scopes,
    chunks: refs,
  };
  return { header: { ...header, checkpoint_hash: checkpointHashOf(header, crypto), auth: null }, chunks: texts };
}

/** The plain SHA-256 digest of version 1. */
export function plainDigest(crypto: Pick<CoreCrypto, 'sha256Hex'>): ChunkDigest {
  return (_scope, text) => crypto.sha256Hex(text);
}

/** The header as JSON (the first line of a published checkpoint). */
export function headerToJson(header: CheckpointHeader): JsonObject {
  const { auth } = header;
  return {
    ...unsignedHeaderJson(header),
    ...(auth ? { mac: auth.mac, sig: auth.sig } : {}),
  };
}

/** The header as JSON without its MAC and signature: what they are computed over (with the publisher and key id when known). */
export function unsignedHeaderJson(header: CheckpointHeader, auth: Pick<HeaderAuth, 'publisher' | 'kid'> | null = header.auth): JsonObject {
  return {
    v: header.v,
    checkpoint_hash: header.checkpoint_hash,
    state_hash: header.state_hash,
    frontier: frontierToJson(header.frontier) as unknown as JsonObject,
    scopes: [...header.scopes],
    chunks: header.chunks.map((c) => ({ scope: c.scope, count: c.count, digest: c.digest })),
    ...(auth ? { publisher: auth.publisher, kid: auth.kid } : {}),
  };
}

/** Parses an untrusted header and checks that its checkpoint hash matches its contents. */
export function parseCheckpointHeader(value: unknown, crypto: Pick<CoreCrypto, 'sha256Hex'>): CheckpointHeader {
  if (!isJsonObject(value)) throw invalid('the header is not an object');
  if (value.v !== 1 && value.v !== CHECKPOINT_VERSION) {
    throw invalid(`it is format version ${JSON.stringify(value.v)}; this opsync reads versions 1 and ${CHECKPOINT_VERSION}`);
  }
  const auth = value.v === 1 ? null : parseAuth(value);
  const frontier = parseFrontier(value.frontier);
  if (!frontier) throw invalid('the frontier is malformed');
  if (!isCheckpointHash(value.checkpoint_hash)) throw invalid('checkpoint_hash is malformed');
  if (typeof value.state_hash !== 'string' || !/^sh-[0-9a-f]{64}$/.test(value.state_hash)) throw invalid('state_hash is malformed');
  const scopes = value.scopes;
  if (!Array.isArray(scopes) || !scopes.every((s) => typeof s === 'string')) throw invalid('scopes is malformed');
  for (const s of scopes) scopeFromKey(s);
  const chunks = value.chunks;
  if (!Array.isArray(chunks)) throw invalid('chunks is not a list');
  const refs = chunks.map((c): ChunkRef => {
    if (!isJsonObject(c) || typeof c.scope !== 'string' || !scopes.includes(c.scope)) throw invalid('a chunk names no listed scope');
    if (!Number.isSafeInteger(c.count) || typeof c.digest !== 'string' || !/^[0-9a-f]{64}$/.test(c.digest))
      throw invalid('a chunk reference is malformed');
    return { scope: c.scope, count: c.count as number, digest: c.digest };
  });
  const header: CheckpointHeader = {
    v: value.v,
    checkpoint_hash: value.checkpoint_hash,
    state_hash: value.state_hash as StateHash,
    frontier,
    scopes: scopes,
    chunks: refs,
    auth,
  };
  if (checkpointHashOf(header, crypto) !== header.checkpoint_hash) throw invalid('checkpoint_hash does not match its contents');
  return header;
}

/**
 * Rebuilds the fold state from a checkpoint's chunks, checking each chunk's digest and shape,
 * and finally the state hash. Feed chunks in header order.
 */
export class CheckpointLoader {
  private readonly state: FoldState;
  private next = 0;

  constructor(
    readonly header: CheckpointHeader,
    crypto: Pick<CoreCrypto, 'sha256Hex'>,
    private readonly digestOf: ChunkDigest = plainDigest(crypto),
  ) {
    this.state = new FoldState(crypto);
  }

  /**
   * Adds the next chunk. `digest` is its digest when the caller already computed it from the
   * same bytes (the decrypting worker does); otherwise it is computed here.
   */
  addChunk(text: string, digest?: string): void {
    const ref = this.header.chunks[this.next];
    if (!ref) throw invalid('it has more chunks than its header lists');
    digest ??= this.digestOf(ref.scope, text);
    if (digest !== ref.digest) throw invalid(`chunk ${this.next} does not match its digest`);
    this.next++;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw invalid(`chunk ${this.next - 1} is not JSON`);
    }
    const items = chunkItems(value);
    if (items.list.length !== ref.count)
      throw invalid(`chunk ${this.next - 1} holds ${items.list.length} items, its header says ${ref.count}`);
    const scope = scopeFromKey(ref.scope);
    for (const item of items.list) this.restore(items.kind, ref.scope, scope, item);
  }

  finish(): FoldState {
    if (this.next !== this.header.chunks.length) throw invalid(`only ${this.next} of ${this.header.chunks.length} chunks arrived`);
    if (this.state.stateHash() !== this.header.state_hash)
      throw invalid('the restored state does not have the state hash the checkpoint claims');
    return this.state;
  }

  private restore(kind: 'records' | 'runs' | 'agents', scopeName: string, scope: Scope, item: unknown): void {
    if (!Array.isArray(item)) throw invalid(`a ${kind} item is not a list`);
    const fields = item as unknown[];
    if (kind === 'records') {
      const [surface, opId, wall, counter, device, payload] = fields;
      if (fields.length !== 6 || !isSurface(surface) || !isOpId(opId) || !isStamp(wall, counter, device) || !isJsonObject(payload)) {
        throw invalid('a record is malformed');
      }
      const hlc = { wall_ms: wall as number, counter: counter as number, device_id: device };
      const outcome = this.state.apply({ op_id: opId, device_id: device, hlc, scope, surface, payload });
      if (outcome !== 'inserted') throw invalid(`record ${opId} is ${outcome === 'skipped' ? 'not a valid payload' : 'a duplicate'}`);
    } else if (kind === 'runs') {
      if (scopeName !== 'personal') throw invalid('intents appear outside the personal scope');
      this.state.restoreRun(parseRun(fields));
    } else {
      const [agent, epoch] = fields;
      if (scopeName !== 'personal' || fields.length !== 2 || !isNameId(agent) || !isEpoch(epoch))
        throw invalid('an agent entry is malformed');
      this.state.restoreAgent(agent as AgentId, epoch);
    }
  }
}

/** The fold of a whole checkpoint given its chunk texts (for tests and local loads). */
export function restoreCheckpoint(checkpoint: PlainCheckpoint, crypto: Pick<CoreCrypto, 'sha256Hex'>, digest?: ChunkDigest): FoldState {
  const loader = new CheckpointLoader(checkpoint.header, crypto, digest);
  for (const chunk of checkpoint.chunks) loader.addChunk(chunk);
  return loader.finish();
}

function checkpointHashOf(
  header: Omit<CheckpointHeader, 'checkpoint_hash' | 'auth'>,
  crypto: Pick<CoreCrypto, 'sha256Hex'>,
): CheckpointHash {
  const covered = {
    v: header.v,
    frontier: frontierToJson(header.frontier),
    scopes: header.scopes,
    state_hash: header.state_hash,
    chunks: header.chunks.map((c) => [c.scope, c.count, c.digest]),
  };
  return `ck-${crypto.sha256Hex(canonicalize(covered))}` as CheckpointHash;
}

/** A version-2 header's publisher, key id, MAC (hex HMAC-SHA256) and signature (base64url Ed25519), checked for shape only. */
function parseAuth(value: JsonObject): HeaderAuth {
  const { publisher, kid, mac, sig } = value;
  if (!isDeviceId(publisher)) throw invalid('the publisher is malformed');
  if (typeof kid !== 'string' || !/^k-[0-9a-f]{16}$/.test(kid)) throw invalid('the key id is malformed');
  if (typeof mac !== 'string' || !/^[0-9a-f]{64}$/.test(mac)) throw invalid('the MAC is malformed');
  if (typeof sig !== 'string' || !/^[A-Za-z0-9_-]{86}$/.test(sig)) throw invalid('the signature is malformed');
  return { publisher, kid, mac, sig };
}

/** The fields of an HLC, checked without building it first. */
function isStamp(wall: unknown, counter: unknown, device: unknown): device is DeviceId {
  return (
    Number.isSafeInteger(wall) &&
    (wall as number) >= 0 &&
    Number.isInteger(counter) &&
    (counter as number) >= 0 &&
    (counter as number) <= 0xffffffff &&
    isDeviceId(device)
  );
}

function chunkItems(value: unknown): { kind: 'records' | 'runs' | 'agents'; list: unknown[] } {
  if (isJsonObject(value) && Object.keys(value).length === 1) {
    for (const kind of ['records', 'runs', 'agents'] as const) {
      const list = value[kind];
      if (Array.isArray(list)) return { kind, list };
    }
  }
  throw invalid('a chunk is not {records}, {runs} or {agents}');
}

function parseRun(item: unknown[]): IntentCandidate {
  const [runId, agentId, epoch, status, opId, wall, counter, device] = item;
  const hlc: unknown = { wall_ms: wall, counter, device_id: device };
  if (
    item.length !== 8 ||
    !isNameId(runId) ||
    !isNameId(agentId) ||
    !isEpoch(epoch) ||
    !INTENT_STATUSES.includes(status as IntentStatus) ||
    !isOpId(opId) ||
    !isHlc(hlc) ||
    !isDeviceId(device)
  ) {
    throw invalid('a run is malformed');
  }
  return {
    run_id: runId as RunId,
    agent_id: agentId as AgentId,
    epoch,
    status: status as IntentStatus,
    op_id: opId,
    hlc: hlc,
    device_id: device,
  };
}

function invalid(reason: string): OpsyncError {
  return new OpsyncError('checkpoint_invalid', `The checkpoint cannot be used: ${reason}.`, { reason });
}
