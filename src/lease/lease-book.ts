import type { AgentId } from '../oplog/ids.js';
import type { LeaseCoordinator } from './coordinator.js';
import { isLive, type Lease, type LeaseRecord } from './lease-rules.js';

/** Agents the book remembers at most; past it the one asked about longest ago is forgotten. */
const MAX_AGENTS = 1000;

/**
 * A lease coordinator that remembers what passed through it (proposals/daemon.md §Metrics): the
 * leases this device holds (granted or renewed here, until released, lost or expired) for the
 * `opsync_leases_held` gauge, and the agents asked about here, newest last, whose current holders
 * the status page reads. Every call goes to the coordinator underneath; the book only watches.
 */
export class LeaseBook implements LeaseCoordinator {
  private readonly held = new Map<AgentId, Lease>();
  private readonly seen = new Set<AgentId>();

  constructor(private readonly inner: LeaseCoordinator) {}

  get kind(): LeaseCoordinator['kind'] {
    return this.inner.kind;
  }

  /** How many leases this device holds that have not expired by `nowMs`. */
  heldCount(nowMs: number): number {
    let count = 0;
    for (const lease of this.held.values()) if (lease.expires_at_ms > nowMs) count++;
    return count;
  }

  /** The current record of each agent asked about here, newest first, `limit` at most. */
  async recent(limit: number): Promise<{ records: LeaseRecord[]; now_ms: number }> {
    const agents = [...this.seen].reverse().slice(0, limit);
    const read = await Promise.all(agents.map((agent) => this.inner.read(agent)));
    const nowMs = Math.max(Date.now(), ...read.map((one) => one.now_ms));
    return { records: read.flatMap((one) => (one.record ? [one.record] : [])), now_ms: nowMs };
  }

  async acquire(...args: Parameters<LeaseCoordinator['acquire']>): Promise<Lease> {
    this.saw(args[0]);
    return this.keep(await this.inner.acquire(...args));
  }

  async renew(...args: Parameters<LeaseCoordinator['renew']>): Promise<Lease> {
    this.saw(args[0]);
    try {
      return this.keep(await this.inner.renew(...args));
    } catch (error) {
      this.held.delete(args[0]);
      throw error;
    }
  }

  async release(...args: Parameters<LeaseCoordinator['release']>): Promise<{ released_at_ms: number }> {
    const released = await this.inner.release(...args);
    this.held.delete(args[0]);
    return released;
  }

  async read(agent: AgentId): Promise<{ record: LeaseRecord | null; now_ms: number }> {
    this.saw(agent);
    const read = await this.inner.read(agent);
    // The lease this device held is gone once the record shows it expired or another epoch took over.
    if (!isLive(read.record, read.now_ms) || read.record.epoch !== this.held.get(agent)?.epoch) this.held.delete(agent);
    return read;
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private keep(lease: Lease): Lease {
    this.held.set(lease.agent_id, lease);
    return lease;
  }

  private saw(agent: AgentId): void {
    this.seen.delete(agent);
    this.seen.add(agent);
    if (this.seen.size > MAX_AGENTS) this.seen.delete(this.seen.values().next().value!);
  }
}
