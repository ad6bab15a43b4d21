import type { DeviceId } from '../oplog/ids.js';
import type { OpRecord } from '../oplog/op-record.js';
import { isOpsyncError } from '../oplog/opsync-error.js';
import type { Relay } from '../../relay/relay.js';

/**
 * Pulls again the ops of `device` from seq `after + 1` through `upto`: the ops a journal's base
 * checkpoint covers and a newer checkpoint does not (proposals/session.md §Rebase). The journal
 * dropped them when it compacted, so a rebase onto that checkpoint must take them from the relay.
 * Answers them in seq order, unverified (the caller checks chain and signatures), or why the
 * relay cannot serve them all.
 */
export async function refetchOps(relay: Relay, device: DeviceId, after: number, upto: number, pageSize: number): Promise<OpRecord[] | string> {
  // Every other device the relay knows is asked from past its end, so pages carry only `device`.
  const others = (await relay.roster()).entries.map((entry) => entry.device_id).filter((id) => id !== device && id !== relay.self);
  const ops: OpRecord[] = [];
  for (let cursor = after; cursor < upto; ) {
    const since = new Map(others.map((id) => [id, Number.MAX_SAFE_INTEGER]));
    since.set(device, cursor);
    let page;
    try {
      page = await relay.pull(since, pageSize);
    } catch (error) {
      if (isOpsyncError(error) && error.code === 'relay_frontier_truncated' && error.data?.device_id === device) {
        return `the relay no longer serves device ${device}'s ops after seq ${after}`;
      }
      throw error;
    }
    const run = page.ops.filter((op) => op.device_id === device && op.seq > cursor && op.seq <= upto);
    if (run.length === 0) return `the relay serves device ${device}'s ops only up to seq ${cursor}, not yet up to seq ${upto}`;
    for (const op of run) ops.push(op);
    cursor = run[run.length - 1]!.seq;
  }
  return ops;
}
