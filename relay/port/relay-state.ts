import { parseFrontier, type Frontier, type SeqFrontier } from '../../src/oplog/frontier.js';
import type { DeviceId } from '../../src/oplog/ids.js';
import { stableFrontier, withStatus, type RosterEntry } from '../../src/oplog/roster.js';
import type { ChainHead, OpRecord } from '../../src/oplog/op-record.js';
import {
  CHECKPOINTS_KEPT,
  NO_REPAIRS,
  type CheckpointHeaderJson,
  type Covering,
  type HeaderCheck,
  type PullPage,
  type Repairs,
  type RosterView,
} from './relay.js';

/** Pieces of relay logic that every backend computes the same way. */

/**
 * Record bytes a pull page holds at most, past its first op: a page of 5 000 large ops (a
 * conversation turn may carry 1 MiB) would otherwise be gigabytes in memory at once.
 */
export const PULL_PAGE_BYTES = 64 * 2 ** 20;

/**
 * The largest op record a relay serves: a payload is at most 1 MiB of canonical JSON, sealed and
 * base64url-encoded ~1.4 MiB. A larger row or line is damage, refused before it is read whole.
 */
export const MAX_RECORD_BYTES = 2 * 2 ** 20;

/** Builds one pull page: at most `limit` ops and, past the first, PULL_PAGE_BYTES of records. */
export class PageBuilder {
  private readonly ops: OpRecord[] = [];
  private bytes = 0;
  private full = false;

  constructor(private readonly limit: number) {}

  /** Adds `op`, whose record is `size` bytes, unless the page is full (then false, and `more`). */
  add(op: OpRecord, size: number): boolean {
    if (this.ops.length === this.limit || (this.ops.length > 0 && this.bytes + size > PULL_PAGE_BYTES)) {
      this.full = true;
      return false;
    }
    this.ops.push(op);
    this.bytes += size;
    return true;
  }

  /** Record bytes the page can still take (for a backend that limits what it fetches). */
  get room(): { ops: number; bytes: number } {
    return { ops: this.limit - this.ops.length, bytes: this.ops.length === 0 ? Number.MAX_SAFE_INTEGER : PULL_PAGE_BYTES - this.bytes };
  }

  page(): PullPage {
    return { ops: this.ops, more: this.full };
  }
}

/** The frontier a checkpoint header claims, or null when it is malformed. */
export function headerFrontier(header: CheckpointHeaderJson): Frontier | null {
  return parseFrontier(header.frontier);
}

/**
 * `device`'s op at `seq` as a stored checkpoint's frontier names it: the anchor a chain may
 * continue from when the relay holds none of the device's ops below it.
 */
export function checkpointHead(
  headers: readonly CheckpointHeaderJson[],
  device: DeviceId,
  seq: number,
  authentic?: HeaderCheck,
): ChainHead | undefined {
  for (const header of headers) {
    if (authentic && !authentic(header)) continue;
    const head = headerFrontier(header)?.get(device);
    if (head?.seq === seq) return head;
  }
  return undefined;
}

/** Total ops a frontier covers: how "late" a checkpoint is, for choosing the latest one. */
export function frontierWeight(frontier: Frontier): number {
  let total = 0;
  for (const head of frontier.values()) total += head.seq + 1;
  return total;
}

/**
 * The newest checkpoint header, or the newest of those that cover `covering.device` up to
 * `covering.seq` at least; with `authentic`, the newest it accepts (newest first, so a reader
 * checks only as many as it must).
 */
export function latestCovering(
  headers: readonly CheckpointHeaderJson[],
  covering?: Covering,
  authentic?: HeaderCheck,
): CheckpointHeaderJson | null {
  const fit = covering ? headers.filter((header) => (headerFrontier(header)?.get(covering.device)?.seq ?? -1) >= covering.seq) : headers;
  return newestFirst(fit).find((header) => authentic?.(header) ?? true) ?? null;
}

/** The authentic checkpoints beyond the newest CHECKPOINTS_KEPT of them: those a collection removes. */
export function staleCheckpoints(headers: readonly CheckpointHeaderJson[], authentic: HeaderCheck): CheckpointHeaderJson[] {
  return newestFirst(headers.filter(authentic)).slice(CHECKPOINTS_KEPT);
}

/** Checkpoint headers ordered newest first (by frontier weight, then hash for a stable order). */
export function newestFirst(headers: readonly CheckpointHeaderJson[]): CheckpointHeaderJson[] {
  return headers
    .map((header) => ({ header, weight: frontierWeight(headerFrontier(header) ?? new Map()) }))
    .sort((a, b) => b.weight - a.weight || (a.header.checkpoint_hash < b.header.checkpoint_hash ? -1 : 1))
    .map((entry) => entry.header);
}

export function rosterView(
  entries: ReadonlyArray<Omit<RosterEntry, 'status'>>,
  floor: SeqFrontier,
  nowMs: number,
  horizonMs: number,
): RosterView {
  const withStatuses = withStatus(entries, floor, nowMs, horizonMs);
  return { entries: withStatuses, floor, stable: stableFrontier(withStatuses) };
}

/**
 * How far this device may collect its own ops: at or below both the stable frontier (every
 * active device holds them) and the head for it of the checkpoint it verified (which stands in
 * for them). -1 when nothing may go.
 */
export function collectableThrough(self: DeviceId, view: RosterView, verified: Frontier): number {
  return Math.min(view.stable.get(self) ?? -1, verified.get(self)?.seq ?? -1);
}

/** The repair operations of a relay whose stored records nothing but the relay writes: there is never anything to mend. */
export const nothingToMend = {
  repairs: (): Promise<Repairs> => Promise.resolve(NO_REPAIRS),
  restoreCheckpoint: (): Promise<void> => Promise.resolve(),
  reportDamage: (): Promise<void> => Promise.resolve(),
};
