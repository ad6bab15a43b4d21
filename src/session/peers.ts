import type { CheckpointHeader } from '../checkpoint/checkpoint.js';
import type { DeviceKey } from '../crypto/device-key.js';
import type { Keyring } from '../crypto/keyring.js';
import type { CoreCrypto } from '../oplog/core-crypto.js';
import type { DeviceId } from '../oplog/ids.js';
import type { CheckpointHeaderJson, Covering, HeaderCheck, Relay, RosterView } from '../../relay/port/relay.js';
import { CheckpointAuthority } from './checkpoint-auth.js';

/**
 * Why a rebase or a chain restart waits for another device: the checkpoints on the relay were published by a device
 * the relay no longer has registered (restored from a copy older than its registration), so no key
 * authenticates them here until that device writes again and so registers again.
 */
export const PUBLISHER_UNREGISTERED =
  'the checkpoints on the relay were published by a device the relay no longer has registered; they are used once that device writes to the relay again';

export interface PeersDeps {
  readonly device: DeviceId;
  readonly deviceKey: DeviceKey;
  readonly keyring: Keyring;
  readonly crypto: CoreCrypto;
  readonly relay: Relay;
  readonly now: () => number;
  /** Least time between two roster reads (keys rarely change; an unknown device forces a read). */
  readonly rosterRefreshMs: number;
}

/**
 * What this device knows of the other devices (proposals/session.md §Peers): the relay's roster
 * (registered keys, acks, the stable frontier), read at most every `rosterRefreshMs`, and which
 * checkpoints on the relay it trusts (`CheckpointAuthority`, with publishers' keys from it).
 */
export class Peers {
  /** Registered public keys by device, from the roster. */
  readonly keys = new Map<DeviceId, string>();
  readonly authority: CheckpointAuthority;
  private view: RosterView | null = null;
  private readAt = 0;

  constructor(private readonly deps: PeersDeps) {
    this.authority = new CheckpointAuthority(deps.keyring, deps.crypto, (device) =>
      device === deps.device ? deps.deviceKey.publicKey : (this.keys.get(device) ?? null),
    );
  }

  /** The roster read last, if any. */
  get roster(): RosterView | null {
    return this.view;
  }

  /** The relay-side check of checkpoint headers (`HeaderCheck`). */
  get authentic(): HeaderCheck {
    return this.authority.authentic;
  }

  /**
   * Reads the roster unless it was read less than `rosterRefreshMs` ago (through the injected
   * clock; a clock set back counts as due); `force` reads it regardless.
   */
  async refresh(force: boolean): Promise<RosterView> {
    const now = this.deps.now();
    const age = now - this.readAt;
    if (!force && this.view && age >= 0 && age < this.deps.rosterRefreshMs) return this.view;
    const view = await this.deps.relay.roster();
    this.view = view;
    this.readAt = now;
    for (const entry of view.entries) this.keys.set(entry.device_id, entry.public_key);
    return view;
  }

  /** Why `header` is not to be trusted, or null; a publisher the roster read last did not show makes it read again, once. */
  readonly trust = async (header: CheckpointHeader): Promise<string | null> => {
    this.authority.unknownPublisher = false;
    const problem = this.authority.problem(header);
    if (problem === null || !this.authority.unknownPublisher) return problem;
    await this.refresh(true);
    return this.authority.problem(header);
  };

  /** A checkpoint refused last time only because its publisher was not in the roster then is judged again on a fresh roster. */
  async refreshForRefused(): Promise<void> {
    if (!this.authority.unknownPublisher) return;
    this.authority.unknownPublisher = false;
    await this.refresh(true);
  }

  /**
   * The relay's latest checkpoint that this device authenticates (with `covering`, of those that
   * cover a device that far). A header refused only because its publisher was not in the roster
   * this device read last asks for the roster again, once.
   */
  async latestCheckpoint(covering?: Covering): Promise<CheckpointHeaderJson | null> {
    if (this.keys.size === 0) await this.refresh(true);
    this.authority.unknownPublisher = false;
    this.authority.missingKid = null;
    const latest = await this.deps.relay.latestCheckpoint(covering, this.authentic);
    if (!this.authority.unknownPublisher) return latest;
    await this.refresh(true);
    // Set again by this read alone: whether a publisher is still unknown on the fresh roster.
    this.authority.unknownPublisher = false;
    return this.deps.relay.latestCheckpoint(covering, this.authentic);
  }
}
