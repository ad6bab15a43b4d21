import pg from 'pg';
import type { CoreCrypto } from '../../src/oplog/core-crypto.js';
import { parseSeqFrontier, seqFrontierToJson, type SeqFrontier } from '../../src/oplog/frontier.js';
import { isDeviceId, type DeviceId, type OpId } from '../../src/oplog/ids.js';
import { canonicalRecord, headOf, type ChainHead, type OpRecord } from '../../src/oplog/op-record.js';
import { isOpsyncError, OpsyncError } from '../../src/util/opsync-error.js';
import { DEFAULT_EVICTION_HORIZON_MS } from '../../src/oplog/roster.js';
import { checkRestartAnchor, isOwnSigned, planPush } from '../port/push-rules.js';
import { assertAcksMonotone, keyConflict, notRegistered, truncatedAt } from '../port/relay-errors.js';
import { MAX_JSON_FILE_BYTES } from '../../src/platform/durable-fs.js';
import {
  checkpointHead,
  collectableThrough,
  frontierWeight,
  nothingToMend,
  headerFrontier,
  latestCovering,
  MAX_RECORD_BYTES,
  PageBuilder,
  rosterView,
  staleCheckpoints,
} from '../port/relay-state.js';
import {
  type CheckpointFile,
  type Covering,
  type CheckpointHeaderJson,
  type CheckpointStream,
  type GcBounds,
  type GcResult,
  type HeaderCheck,
  type PullPage,
  type Gap,
  type PushResult,
  type Relay,
  type RosterView,
  type Truncated,
  type Watch,
} from '../port/relay.js';
import { inTransaction, maskedUrl, NOW_MS, schemaOnFirstUse } from '../../src/platform/pg-database.js';
import { CHANNEL, listenForChanges } from './pg-listen.js';
import { RowReader } from './pg-rows.js';
import { ensureSchema } from './pg-schema.js';

/**
 * The Postgres relay (proposals/relay.md §Postgres): the relay port on one database shared by
 * devices on several machines. Ops are stored as their canonical text, one row each; a push is a
 * transaction holding the pushing device's row lock, so its chain checks and inserts are atomic.
 * Other devices hear of pushes and checkpoints through LISTEN/NOTIFY. Rows are untrusted like
 * relay files: readers parse and verify them, and skip and count what does not parse. Database
 * failures are `relay_unavailable`. The clock for last-seen times is the device's, as with the
 * directory relay.
 */
export interface PostgresRelayOptions {
  readonly url: string;
  readonly self: DeviceId;
  readonly crypto: CoreCrypto;
  /**
   * A clock for tests. Without it the database's clock stamps when a device was added and last
   * seen, and decides who is evicted: devices on several machines need not agree on the time.
   */
  readonly now?: () => number;
  readonly horizonMs?: number;
}

export class PostgresRelay implements Relay {
  readonly self: DeviceId;
  readonly location: string;
  private readonly pool: pg.Pool;
  /** Reads rows as untrusted input, and counts those that are not what the schema promises. */
  private readonly rows: RowReader;
  private readonly crypto: CoreCrypto;
  private readonly now: (() => number) | null;
  private readonly horizonMs: number;
  /** The key this device registered with: its own rows count only when they verify under it. */
  private ownKey: string | null = null;
  /** The op id of this device's newest row as this handle last pushed or verified it. */
  private verifiedHead: string | null = null;
  private readonly schema = schemaOnFirstUse(() => ensureSchema(this.pool, this.location));

  private constructor(options: PostgresRelayOptions) {
    this.self = options.self;
    this.location = maskedUrl(options.url);
    this.crypto = options.crypto;
    this.now = options.now ?? null;
    this.horizonMs = options.horizonMs ?? DEFAULT_EVICTION_HORIZON_MS;
    this.pool = new pg.Pool({ connectionString: options.url, max: 4, connectionTimeoutMillis: 5_000, allowExitOnIdle: true });
    this.rows = new RowReader(this.pool);
    this.pool.on('error', () => {
      // An idle connection dropped; the next query reconnects or fails by name.
    });
  }

  /**
   * Connects and creates the schema on first use. A database that cannot be reached now is not
   * an error: the relay answers `relay_unavailable` until it is back. One that refuses this
   * device (credentials, a missing database, a foreign schema) is.
   */
  static async open(options: PostgresRelayOptions): Promise<PostgresRelay> {
    const relay = new PostgresRelay(options);
    try {
      await relay.schema.atStart();
    } catch (error) {
      await relay.close();
      throw relay.failed(error);
    }
    return relay;
  }

  register(publicKey: string): Promise<void> {
    this.ownKey = publicKey;
    return this.db(async () => {
      await this.pool.query(
        `INSERT INTO opsync_devices (device_id, public_key, added_ms, last_seen_ms) VALUES ($1, $2, COALESCE($3, ${NOW_MS}), COALESCE($3, ${NOW_MS})) ON CONFLICT DO NOTHING`,
        [this.self, publicKey, this.now?.() ?? null],
      );
      const { rows } = await this.pool.query<{ public_key: string }>('SELECT public_key FROM opsync_devices WHERE device_id = $1', [
        this.self,
      ]);
      if (rows[0]?.public_key !== publicKey) throw keyConflict(this.self);
    });
  }

  push(ops: readonly OpRecord[], authentic?: HeaderCheck): Promise<PushResult | Gap> {
    return this.transaction(async (client) => {
      const { rows } = await client.query<{ public_key: string; floor: string }>(
        'SELECT public_key, floor FROM opsync_devices WHERE device_id = $1 FOR UPDATE',
        [this.self],
      );
      const device = rows[0];
      const headOp = await this.ownHead(client);
      const plan = await planPush(
        {
          self: this.self,
          publicKey: device?.public_key ?? null,
          head: headOp ? headOf(headOp) : null,
          floor: Number(device?.floor ?? 0),
          heldOpId: async (seq) => {
            const held = await client.query<{ op_id: string }>('SELECT op_id FROM opsync_ops WHERE device_id = $1 AND seq = $2', [
              this.self,
              seq,
            ]);
            return held.rows[0]?.op_id as OpId | undefined;
          },
          checkpointHead: async (seq) => checkpointHead(await this.rows.headers(), this.self, seq, authentic),
        },
        ops,
        this.crypto,
      );
      if ('gap' in plan) return plan;
      if (plan.fresh.length > 0) {
        await client.query(
          'INSERT INTO opsync_ops (device_id, seq, op_id, record) SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])',
          [this.self, plan.fresh.map((op) => op.seq), plan.fresh.map((op) => op.op_id), plan.fresh.map((op) => canonicalRecord(op))],
        );
        await client.query('SELECT pg_notify($1, $2)', [CHANNEL, this.self]);
        // Verified by the push's chain check: the next push need not check its signature again.
        this.verifiedHead = plan.fresh.at(-1)!.op_id;
      }
      if (plan.floor !== undefined)
        await client.query('UPDATE opsync_devices SET floor = $2 WHERE device_id = $1', [this.self, plan.floor]);
      return { pushed: plan.fresh.length, deduped: plan.deduped };
    });
  }

  pull(since: SeqFrontier, limit: number): Promise<PullPage | Truncated> {
    return this.db(async () => {
      const { rows: devices } = await this.pool.query<{ device_id: string; floor: string }>(
        'SELECT device_id, floor FROM opsync_devices WHERE device_id <> $1 ORDER BY device_id',
        [this.self],
      );
      const page = new PageBuilder(limit);
      for (const { device_id, floor } of devices) {
        if (!isDeviceId(device_id)) continue;
        const after = since.get(device_id) ?? -1;
        const room = page.room;
        // Rows up to the one that passes the page's byte budget: no more is fetched than fits.
        const { rows } = await this.pool.query<{ seq: string; record: string | null; bytes: number }>(
          // A row larger than any record is not fetched (its record reads as null): rows are hostile.
          `SELECT seq, CASE WHEN bytes <= $5 THEN record END AS record, bytes FROM (
             SELECT seq, record, octet_length(record) AS bytes, sum(octet_length(record)) OVER (ORDER BY seq) AS running
             FROM opsync_ops WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) page
           WHERE running - bytes <= $4 ORDER BY seq`,
          [device_id, after, room.ops + 1, room.bytes, MAX_RECORD_BYTES],
        );
        // Checked first: a chain restarted with nothing above its anchor yet holds no row to serve,
        // and a reader behind it must still learn that those ops are in a checkpoint only.
        if (after < Number(floor) - 1) return truncatedAt(device_id, after, Number(floor));
        if (rows.length === 0) continue;
        for (const row of rows) {
          if (row.record === null) {
            this.rows.count('record_oversized', `${device_id}/${row.seq}`);
            break;
          }
          const op = this.rows.parse(row.record, `${device_id}/${row.seq}`);
          if (!op || op.device_id !== device_id || op.seq !== Number(row.seq)) break;
          if (!page.add(op, row.bytes)) return page.page();
        }
      }
      return page.page();
    });
  }

  head(device: DeviceId): Promise<number> {
    return this.db(async () => {
      if (device === this.self) return (await this.ownHead(this.pool))?.seq ?? -1;
      const { rows } = await this.pool.query<{ head: string | null }>('SELECT max(seq) AS head FROM opsync_ops WHERE device_id = $1', [
        device,
      ]);
      return rows[0]?.head === null || rows[0] === undefined ? -1 : Number(rows[0].head);
    });
  }

  // Rows are written whole, one transaction per push; a row edited by hand is counted (`record_invalid`), not repaired.
  readonly repairs = nothingToMend.repairs;
  readonly restoreCheckpoint = nothingToMend.restoreCheckpoint;
  readonly reportDamage = nothingToMend.reportDamage;

  restartAbove(anchor: ChainHead, authentic?: HeaderCheck): Promise<void> {
    return this.transaction(async (client) => {
      const { rows } = await client.query('SELECT 1 FROM opsync_devices WHERE device_id = $1 FOR UPDATE', [this.self]);
      if (rows.length === 0) throw notRegistered(this.self);
      checkRestartAnchor(this.self, anchor, checkpointHead(await this.rows.headers(), this.self, anchor.seq, authentic));
      await client.query('DELETE FROM opsync_ops WHERE device_id = $1', [this.self]);
      await client.query('UPDATE opsync_devices SET floor = $2 WHERE device_id = $1', [this.self, anchor.seq + 1]);
      await client.query('SELECT pg_notify($1, $2)', [CHANNEL, this.self]);
    });
  }

  ack(acked: SeqFrontier): Promise<void> {
    return this.transaction(async (client) => {
      const { rows } = await client.query<{ acked: unknown }>('SELECT acked FROM opsync_devices WHERE device_id = $1 FOR UPDATE', [
        this.self,
      ]);
      if (!rows[0]) throw notRegistered(this.self);
      const current = parseSeqFrontier(rows[0].acked) ?? new Map<DeviceId, number>();
      assertAcksMonotone(this.self, current, acked);
      const next = seqFrontierToJson(new Map([...current, ...acked]));
      await client.query(`UPDATE opsync_devices SET acked = $2, last_seen_ms = COALESCE($3, ${NOW_MS}) WHERE device_id = $1`, [
        this.self,
        JSON.stringify(next),
        this.now?.() ?? null,
      ]);
    });
  }

  roster(): Promise<RosterView> {
    return this.db(async () => {
      const { rows } = await this.pool.query<{
        device_id: string;
        public_key: string | null;
        added_ms: string;
        last_seen_ms: string;
        acked: unknown;
        floor: string;
        now_ms: string;
      }>(
        // Bounded in SQL: a hand-written row cannot make a roster read hold megabytes.
        `SELECT device_id, CASE WHEN octet_length(public_key) <= 128 THEN public_key END AS public_key, added_ms, last_seen_ms,
           CASE WHEN pg_column_size(acked) <= ${MAX_JSON_FILE_BYTES} THEN acked END AS acked, floor, ${NOW_MS} AS now_ms
         FROM opsync_devices WHERE octet_length(device_id) <= 64 ORDER BY device_id`,
      );
      const entries = [];
      const floor = new Map<DeviceId, number>();
      for (const row of rows) {
        const acked = parseSeqFrontier(row.acked);
        if (!isDeviceId(row.device_id) || !acked || row.public_key === null) {
          this.rows.count('device_row_invalid', row.device_id);
          continue;
        }
        entries.push({
          device_id: row.device_id,
          public_key: row.public_key,
          added_ms: Number(row.added_ms),
          last_seen_ms: Number(row.last_seen_ms),
          acked,
        });
        floor.set(row.device_id, Number(row.floor));
      }
      // With no rows there is no status to decide, and the clock does not matter.
      return rosterView(entries, floor, this.now?.() ?? Number(rows[0]?.now_ms ?? 0), this.horizonMs);
    });
  }

  putCheckpoint(file: CheckpointFile): Promise<boolean> {
    return this.transaction(async (client) => {
      const weight = frontierWeight(headerFrontier(file.header) ?? new Map());
      const inserted = await client.query(
        'INSERT INTO opsync_checkpoints (checkpoint_hash, header, weight) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
        [file.header.checkpoint_hash, JSON.stringify(file.header), weight],
      );
      if (inserted.rowCount === 0) return false;
      for (const [index, chunk] of file.chunks.entries()) {
        await client.query('INSERT INTO opsync_checkpoint_chunks (checkpoint_hash, idx, chunk) VALUES ($1, $2, $3)', [
          file.header.checkpoint_hash,
          index,
          chunk,
        ]);
      }
      await client.query('SELECT pg_notify($1, $2)', [CHANNEL, this.self]);
      return true;
    });
  }

  latestCheckpoint(covering?: Covering, authentic?: HeaderCheck): Promise<CheckpointHeaderJson | null> {
    return this.db(async () => latestCovering(await this.rows.headers(), covering, authentic));
  }

  readCheckpoint(hash: string): Promise<CheckpointStream | null> {
    return this.db(async () => {
      const { rows } = await this.pool.query<{ header: CheckpointHeaderJson }>(
        'SELECT header FROM opsync_checkpoints WHERE checkpoint_hash = $1',
        [hash],
      );
      if (!rows[0]) return null;
      return { header: rows[0].header, chunks: this.rows.chunks(hash) };
    });
  }

  async checkpointBytes(hash: string): Promise<AsyncIterable<Uint8Array> | null> {
    const read = await this.readCheckpoint(hash);
    if (!read) return null;
    return (async function* () {
      yield Buffer.from(JSON.stringify(read.header) + '\n');
      for await (const chunk of read.chunks) yield Buffer.from(chunk + '\n');
    })();
  }

  gc(bounds: GcBounds): Promise<GcResult> {
    return this.db(async () => {
      const view = await this.roster();
      const through = Math.min(collectableThrough(this.self, view, bounds.verified), (await this.head(this.self)) - 1);
      const deleted = await this.pool.query('DELETE FROM opsync_ops WHERE device_id = $1 AND seq <= $2', [this.self, through]);
      if ((deleted.rowCount ?? 0) > 0)
        await this.pool.query('UPDATE opsync_devices SET floor = GREATEST(floor, $2) WHERE device_id = $1', [this.self, through + 1]);
      const stale = staleCheckpoints(await this.rows.headers(), bounds.authentic).map((h) => h.checkpoint_hash);
      if (stale.length > 0) {
        await this.pool.query('DELETE FROM opsync_checkpoint_chunks WHERE checkpoint_hash = ANY($1)', [stale]);
        await this.pool.query('DELETE FROM opsync_checkpoints WHERE checkpoint_hash = ANY($1)', [stale]);
      }
      return { droppedOps: deleted.rowCount ?? 0, droppedCheckpoints: stale.length };
    });
  }

  /** LISTENs for other devices' pushes and checkpoints (`listenForChanges`). */
  watch(onChange: () => void): Promise<Watch> {
    return listenForChanges(this.pool, this.self, onChange, (operation) => this.db(operation));
  }

  anomalies(): Readonly<Record<string, number>> {
    return this.rows.anomalies();
  }

  bytes(): Promise<number> {
    return this.rows.bytes();
  }

  close(): Promise<void> {
    return this.pool.end();
  }

  /**
   * This device's newest op that its registered key signed. Rows above it that no signature of
   * this device covers were written by someone else: a push removes them (only this device
   * writes its rows), and no head or clone check rests on them (proposals/threat-model.md).
   */
  private async ownHead(client: pg.Pool | pg.PoolClient): Promise<OpRecord | null> {
    const publicKey = this.ownKey;
    if (publicKey === null) throw notRegistered(this.self);
    // Rows read newest first: the newest alone, usually; more only past rows no signature covers.
    let skipped = false;
    for (let below = Number.MAX_SAFE_INTEGER, limit = 1; ; limit = 64) {
      const { rows } = await client.query<{ seq: string; record: string | null }>(
        'SELECT seq, CASE WHEN octet_length(record) <= $3 THEN record END AS record FROM opsync_ops WHERE device_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $4',
        [this.self, below, MAX_RECORD_BYTES, limit],
      );
      for (const row of rows) {
        const op = row.record === null ? null : this.rows.parse(row.record, `${this.self}/${row.seq}`);
        // The op this handle pushed or verified last needs no second signature check (its op_id covers its seq).
        if (op && op.seq === Number(row.seq) && (op.op_id === this.verifiedHead || isOwnSigned(this.self, op, publicKey, this.crypto))) {
          if (skipped && client !== this.pool)
            await client.query('DELETE FROM opsync_ops WHERE device_id = $1 AND seq > $2', [this.self, op.seq]);
          this.verifiedHead = op.op_id;
          return op;
        }
        skipped = true;
        this.rows.count('record_unsigned', `${this.self}/${row.seq}`);
      }
      if (rows.length < limit) {
        if (skipped && client !== this.pool) await client.query('DELETE FROM opsync_ops WHERE device_id = $1', [this.self]);
        return null;
      }
      below = Number(rows.at(-1)!.seq);
    }
  }

  private transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.db(() => inTransaction(this.pool, work));
  }

  /** Runs a database operation (creating the schema first if needed); named failures pass through, database failures are relay_unavailable. */
  private async db<T>(operation: () => Promise<T>): Promise<T> {
    try {
      await this.schema.ready();
      return await operation();
    } catch (error) {
      throw this.failed(error);
    }
  }

  private failed(error: unknown): OpsyncError {
    if (isOpsyncError(error)) return error;
    return new OpsyncError('relay_unavailable', `The Postgres relay ${this.location} failed: ${(error as Error).message}.`, {
      relay: this.location,
    });
  }
}
