import type { AgentId, DeviceId, Epoch } from '../oplog/ids.js';
import type { Lease, LeaseRecord } from './lease-rules.js';

/**
 * The lease coordinator port (proposals/leases.md). Implementations: in-memory (tests), directory
 * (a lock and a compare-and-set file under the relay directory; linearizable for daemons on one
 * host with a local file system) and Postgres (linearizable across machines; the database's
 * clock decides expiry). One contract suite runs against all three.
 *
 * Guarantees: operations on one agent are linearizable; epochs strictly increase and are never
 * reused, across restarts and reconnects; every time is the coordinator's clock. A coordinator
 * that cannot answer fails with `lease_backend_unavailable` — never with a success.
 */
export interface LeaseCoordinator {
  readonly kind: 'memory' | 'dir' | 'postgres';
  /** Mints the epoch after the stored one and after `floor` (the highest epoch the intent ledger has seen). */
  acquire(agent: AgentId, device: DeviceId, ttlMs: number, floor?: Epoch): Promise<Lease>;
  renew(agent: AgentId, device: DeviceId, epoch: Epoch, ttlMs: number): Promise<Lease>;
  release(agent: AgentId, device: DeviceId, epoch: Epoch): Promise<{ released_at_ms: number }>;
  /** The agent's lease record (null when it was never leased) and the coordinator's time now. */
  read(agent: AgentId): Promise<{ record: LeaseRecord | null; now_ms: number }>;
  close(): Promise<void>;
}
