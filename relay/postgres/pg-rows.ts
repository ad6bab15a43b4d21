import type pg from 'pg';
import { parseOpRecord, type OpRecord } from '../../src/oplog/op-record.js';
import { MAX_JSON_FILE_BYTES } from '../../src/platform/durable-fs.js';
import { OpsyncError } from '../../src/util/opsync-error.js';
import { MAX_CHUNK_LINE_BYTES } from '../port/checkpoint-files.js';
import type { CheckpointHeaderJson } from '../port/relay.js';

/**
 * Rows of the Postgres relay read as untrusted input (proposals/relay.md §Postgres): bounded in
 * SQL, parsed, and — when not what the schema promises — skipped and counted once each, by row
 * (device/seq, or checkpoint hash), as the directory relay counts files.
 */
export class RowReader {
  private readonly bad = new Map<string, string>();

  constructor(private readonly pool: pg.Pool) {}

  /** The counts of bad rows by kind (`sync.status` reports them as ignored relay files). */
  anomalies(): Readonly<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const kind of this.bad.values()) counts[kind] = (counts[kind] ?? 0) + 1;
    return counts;
  }

  /** The bytes of the relay's tables with their indexes and TOAST (`pg_total_relation_size`). */
  async bytes(): Promise<number> {
    const { rows } = await this.pool.query<{ bytes: string | null }>(
      `SELECT sum(pg_total_relation_size(to_regclass(name)))::text AS bytes FROM unnest($1::text[]) AS name`,
      [['opsync_meta', 'opsync_devices', 'opsync_ops', 'opsync_checkpoints', 'opsync_checkpoint_chunks']],
    );
    return Number(rows[0]?.bytes ?? 0);
  }

  /** The headers of the checkpoints held, each bounded in size and naming its own hash. */
  async headers(): Promise<CheckpointHeaderJson[]> {
    const { rows } = await this.pool.query<{ header: CheckpointHeaderJson | null; checkpoint_hash: string }>(
      `SELECT checkpoint_hash, CASE WHEN pg_column_size(header) <= ${MAX_JSON_FILE_BYTES} THEN header END AS header FROM opsync_checkpoints`,
    );
    const headers: CheckpointHeaderJson[] = [];
    for (const row of rows) {
      if (row.header === null || typeof row.header !== 'object' || row.header.checkpoint_hash !== row.checkpoint_hash)
        this.count('checkpoint_invalid', row.checkpoint_hash);
      else headers.push(row.header);
    }
    return headers;
  }

  async *chunks(hash: string): AsyncGenerator<string> {
    const { rows } = await this.pool.query<{ idx: number }>(
      'SELECT idx FROM opsync_checkpoint_chunks WHERE checkpoint_hash = $1 ORDER BY idx',
      [hash],
    );
    for (const { idx } of rows) {
      const chunk = await this.pool.query<{ chunk: string | null }>(
        'SELECT CASE WHEN octet_length(chunk) <= $3 THEN chunk END AS chunk FROM opsync_checkpoint_chunks WHERE checkpoint_hash = $1 AND idx = $2',
        [hash, idx, MAX_CHUNK_LINE_BYTES],
      );
      const text = chunk.rows[0]?.chunk;
      if (text === null)
        throw new OpsyncError('checkpoint_invalid', `Chunk ${idx} of checkpoint ${hash} is larger than any checkpoint chunk.`, {
          checkpoint_hash: hash,
        });
      if (text !== undefined) yield text;
    }
  }

  /** A checkpoint's chunks in order, each bounded in size. */

  parse(record: string, key: string): OpRecord | null {
    try {
      return parseOpRecord(JSON.parse(record));
    } catch {
      this.count('record_invalid', key);
      return null;
    }
  }

  /** Counts the row named `key` as `kind`, once however often it is read (as the directory relay counts files). */
  count(kind: string, key: string): void {
    this.bad.set(key, kind);
  }
}
