import { generateDeviceKey, type DeviceKey } from '../../src/crypto/device-key.js';
import { Keyring } from '../../src/crypto/keyring.js';
import { scopeKeyFromBytes, type ScopeKey } from '../../src/crypto/scope-key.js';
import { MemoryJournalStore } from '../../src/journal/memory-journal.js';
import { parseDeviceId, type DeviceId } from '../../src/oplog/ids.js';
import { MemoryCheckpointStore } from '../../src/session/checkpoint-store.js';
import { Session, type SessionLog, type SessionOptions } from '../../src/session/session.js';
import { MemoryRelayStore } from '../../relay/memory/memory-relay.js';
import type { CheckpointFile, Relay } from '../../relay/port/relay.js';
import { coreCrypto } from './test-device.js';

export const PERSONAL_KEY: ScopeKey = scopeKeyFromBytes('personal', Buffer.alloc(32, 0x11));

/**
 * Devices sharing one in-memory relay, each with a journal that survives crashes. A device's
 * key and checkpoint copies persist across its restarts, like its data directory would.
 */
export class World {
  now = 1_767_225_600_000;
  readonly relays: MemoryRelayStore;
  readonly journals = new MemoryJournalStore();
  private readonly disks = new Map<DeviceId, { key: DeviceKey; checkpoints: MemoryCheckpointStore; keyring: Keyring }>();
  /** Each device's wall clock is the world clock plus its skew. */
  readonly skew = new Map<DeviceId, number>();
  /** Every relay connection opened, closed by `dispose`. */
  private readonly connections: Relay[] = [];

  constructor(horizonMs?: number) {
    this.relays = new MemoryRelayStore(coreCrypto, () => this.now, horizonMs);
  }

  async open(
    name: string,
    options: { relay?: (relay: Relay) => Relay; session?: Partial<SessionOptions>; keys?: ScopeKey[]; log?: SessionLog } = {},
  ): Promise<Session> {
    const device = parseDeviceId(name);
    let disk = this.disks.get(device);
    if (!disk) {
      disk = { key: generateDeviceKey(), checkpoints: new MemoryCheckpointStore(), keyring: new Keyring(options.keys ?? [PERSONAL_KEY]) };
      this.disks.set(device, disk);
    }
    const base = await this.connectRelay(device);
    this.connections.push(base);
    return Session.open({
      device,
      deviceKey: disk.key,
      keyring: disk.keyring,
      crypto: coreCrypto,
      relay: options.relay ? options.relay(base) : base,
      checkpoints: disk.checkpoints,
      now: () => this.now + (this.skew.get(device) ?? 0),
      journalLocation: `memory:${name}`,
      openJournal: (visit) => this.journals.open(name, visit),
      ...(options.log ? { log: options.log } : {}),
      options: { autoCheckpointOps: 0, ackIntervalMs: 0, rosterRefreshMs: 0, ...options.session },
    });
  }

  /** `name`'s device key (a member could sign with it what it likes). */
  deviceKeyOf(name: string): DeviceKey {
    return this.disks.get(parseDeviceId(name))!.key;
  }

  keyringOf(name: string): Keyring {
    return this.disks.get(parseDeviceId(name))!.keyring;
  }

  /** The checkpoint copies in `name`'s data directory. */
  checkpointsOf(name: string): MemoryCheckpointStore {
    return this.disks.get(parseDeviceId(name))!.checkpoints;
  }

  /** A copy of the relay as it is now, as a backup of its folder or database would be. */
  backupRelay(): RelayBackup {
    return copyRelay(this.relays);
  }

  /** The relay, backed up now; the function returned restores it from this backup under the running devices. */
  snapshotRelay(): Promise<() => Promise<void>> {
    const backup = this.backupRelay();
    return Promise.resolve(() => Promise.resolve(this.restoreRelay(backup)));
  }

  /** A checkpoint file put on the relay by someone who is no device of the user (a hostile writer). */
  async plantCheckpoint(file: CheckpointFile): Promise<void> {
    const relay = await this.connectRelay(parseDeviceId('mallory'));
    await relay.putCheckpoint(file);
    await relay.close();
  }

  /** Closes every relay connection a device opened (a device that crashed left its own open). */
  async dispose(): Promise<void> {
    await Promise.all(this.connections.splice(0).map((relay) => relay.close()));
  }

  /** `device`'s connection to the relay. */
  protected connectRelay(device: DeviceId): Promise<Relay> {
    return Promise.resolve(this.relays.connect(device));
  }

  /** The relay is restored from `backup` under the running devices. */
  restoreRelay(backup: RelayBackup): void {
    const copy = copyRelay(backup);
    this.relays.devices.clear();
    for (const [device, record] of copy.devices) this.relays.devices.set(device, record);
    this.relays.checkpoints.clear();
    for (const [hash, file] of copy.checkpoints) this.relays.checkpoints.set(hash, file);
  }

  /** The process holding `name` dies: its journal keeps what was durable, everything else is gone. */
  crash(name: string): void {
    this.journals.crash(name);
  }
}

export type RelayBackup = Pick<MemoryRelayStore, 'devices' | 'checkpoints'>;

function copyRelay(from: RelayBackup): RelayBackup {
  const devices = new Map(
    [...from.devices].map(([device, record]) => [device, { ...record, ops: [...record.ops], acked: new Map(record.acked) }]),
  );
  return { devices, checkpoints: new Map(from.checkpoints) };
}
