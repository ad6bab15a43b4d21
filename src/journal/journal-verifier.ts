import { checkLinkage } from '../oplog/chain.js';
import type { DeviceId } from '../oplog/ids.js';
import type { ChainHead } from '../oplog/op-record.js';
import { corrupt } from './journal-codec.js';
import type { BaseEntry, JournalEntry } from './journal.js';

/**
 * Verifies a journal as it is replayed: every op continues its device's chain (seq, prev,
 * stamp), starting from the base marker's frontier after a compaction. The file journal has
 * already checked each op_id against the op's stored bytes; signatures are not re-checked: the
 * ops were verified before they were journaled, and the chain binds them to their heads.
 * A break is a `journal_corrupt` error naming the file and line.
 */
export class JournalVerifier {
  /** Per device, the newest op seen so far. */
  readonly heads = new Map<DeviceId, ChainHead>();
  base: BaseEntry | null = null;
  ops = 0;

  constructor(private readonly location: string) {}

  check(entry: JournalEntry, line: number): void {
    if (entry.kind === 'base') {
      if (this.ops > 0 || this.base) throw corrupt(this.location, line, 'a base marker appears after the start of the journal');
      this.base = entry;
      for (const [device, head] of entry.frontier) this.heads.set(device, head);
      return;
    }
    const { op } = entry;
    const error = checkLinkage(op.device_id, this.heads.get(op.device_id) ?? null, op);
    if (error) throw corrupt(this.location, line, error.message);
    this.heads.set(op.device_id, { seq: op.seq, op_id: op.op_id, hlc: op.hlc });
    this.ops++;
  }
}
