import type { DeviceId } from '../../src/oplog/ids.js';
import { OpsyncError } from '../../src/util/opsync-error.js';
import type { Gap, Truncated } from './relay.js';

/** The relay's named failures, shared by every backend. */

/** A pull's outcome below `device`'s floor. */
export function truncatedAt(device: DeviceId, since: number, floor: number): Truncated {
  return { truncated: { device_id: device, since, floor } };
}

/** The failure a pull below the floor is, for a reader that cannot rebase past it. */
export function truncatedError({ truncated }: Truncated): OpsyncError {
  const { device_id, since, floor } = truncated;
  return new OpsyncError(
    'relay_frontier_truncated',
    `The relay no longer holds device ${device_id}'s ops after seq ${since} (it serves from seq ${floor}); rebase from a checkpoint.`,
    { device_id, since, floor },
  );
}

/** The failure a gap is, for a pusher that cannot fill it. */
export function gapError({ gap }: Gap): OpsyncError {
  return new OpsyncError('relay_gap', `Device ${gap.device_id} pushed seq ${gap.offered} but the relay holds up to ${gap.head}.`, gap);
}

/** Acks are monotone: refuses `acked` when it names a lower seq of some device than `current` holds. */
export function assertAcksMonotone(device: DeviceId, current: ReadonlyMap<DeviceId, number>, acked: ReadonlyMap<DeviceId, number>): void {
  for (const [of, seq] of acked) {
    const was = current.get(of) ?? -1;
    if (seq < was) throw ackRegression(device, of, was, seq);
  }
}

function ackRegression(device: DeviceId, of: DeviceId, was: number, offered: number): OpsyncError {
  return new OpsyncError(
    'relay_ack_regression',
    `Device ${device} acked seq ${offered} of ${of} after acking ${was}: acks never go back.`,
    {
      device_id: device,
      of,
      was,
      offered,
    },
  );
}

export function keyConflict(device: DeviceId): OpsyncError {
  return new OpsyncError(
    'relay_key_conflict',
    `Device ${device} is registered with a different public key: another device uses this id, or this device's key file was replaced.`,
    { device_id: device },
  );
}

export function notRegistered(device: DeviceId): OpsyncError {
  return new OpsyncError('relay_not_registered', `Device ${device} must register its public key with the relay first.`, {
    device_id: device,
  });
}

export function concurrentWriter(device: DeviceId, seq: number): OpsyncError {
  return new OpsyncError(
    'relay_fork',
    `Another writer pushed device ${device}'s ops from seq ${seq} at the same time: two daemons use this device id.`,
    { device_id: device, seq },
  );
}
