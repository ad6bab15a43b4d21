import { openPayload } from '../crypto/envelope.js';
import type { Keyring } from '../crypto/keyring.js';
import type { Journal } from '../journal/journal.js';
import { JournalVerifier } from '../journal/journal-verifier.js';
import { canonicalize } from '../oplog/canonical.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { DeviceId } from '../oplog/ids.js';
import type { OpRecord } from '../oplog/op-record.js';
import type { VerifyReport } from './session-reports.js';

export interface AuditContext {
  /** Where the journal lives, for messages. */
  readonly location: string;
  readonly keyring: Keyring;
  readonly crypto: CoreCrypto;
  /** Public keys by device (the roster's, and this device's own). */
  readonly keys: ReadonlyMap<DeviceId, string>;
}

/**
 * `sync.verify`: re-reads the whole journal and checks every chain and op id, each cached
 * plaintext against its op's envelope, and the newest op's signature of every device (the
 * chains bind the older ops to it). Problems are listed, not thrown.
 */
export async function auditJournal(journal: Journal, context: AuditContext): Promise<VerifyReport> {
  const problems: string[] = [];
  const verifier = new JournalVerifier(context.location);
  const lastOf = new Map<DeviceId, OpRecord>();
  let entries = 0;
  try {
    await journal.replay((entry, line) => {
      entries++;
      verifier.check(entry, line);
      if (entry.kind !== 'op') return;
      lastOf.set(entry.op.device_id, entry.op);
      if (entry.plain === null) return;
      const opened = openPayload(context.keyring, entry.op.payload, entry.op);
      if (opened.ok && canonicalize(opened.payload) !== canonicalize(entry.plain)) {
        problems.push(`${context.location} line ${line}: the cached plaintext does not match the op's envelope`);
      }
    });
  } catch (error) {
    problems.push((error as Error).message);
  }
  for (const [device, op] of lastOf) {
    const key = context.keys.get(device);
    if (key && !context.crypto.verify(key, op.op_id, op.sig))
      problems.push(`device ${device} seq ${op.seq}: the newest op's signature does not verify`);
  }
  return { ok: problems.length === 0, entries, problems };
}
