import { OpsyncError } from '../util/opsync-error.js';
import { isCharsetString, LOWER_HEX } from '../util/charset.js';
import { LIMITS } from '../util/limits.js';

/**
 * Branded identifiers: only the `parseX` functions below create them, so a value of type
 * `DeviceId` has been checked. Formats are strict because some ids become path components
 * (device ids name relay folders; agent ids name lease files) and none may carry `/`, `..` or NUL.
 */
declare const brand: unique symbol;
export type Brand<T, B extends string> = T & { readonly [brand]: B };

/** `T` as it crosses the wire: branded strings and numbers are plain ones (what a client sends; the server parses them). */
export type Unbranded<T> = T extends string & { readonly [brand]: string }
  ? string
  : T extends number & { readonly [brand]: string }
    ? number
    : T extends readonly (infer E)[]
      ? Unbranded<E>[]
      : T extends object
        ? { [K in keyof T]: Unbranded<T[K]> }
        : T;

export type DeviceId = Brand<string, 'DeviceId'>;
export type OpId = Brand<string, 'OpId'>;
export type AgentId = Brand<string, 'AgentId'>;
export type RunId = Brand<string, 'RunId'>;
export type ConversationId = Brand<string, 'ConversationId'>;
export type Epoch = Brand<number, 'Epoch'>;
/** A checkpoint's content address: `ck-` and the SHA-256 of what it covers (proposals/checkpoint.md). */
export type CheckpointHash = Brand<string, 'CheckpointHash'>;

/** Lowercase only, so that two devices never collide on a case-insensitive file system. */
const DEVICE_ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;
/** Agent, run and conversation ids: letters, digits and `._:@-`, starting with a letter or digit. */
export const NAME_ID = new RegExp(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,${LIMITS.maxIdLength - 1}}$`);

export function isDeviceId(value: unknown): value is DeviceId {
  return typeof value === 'string' && DEVICE_ID.test(value);
}

export function parseDeviceId(value: unknown, field = 'device_id'): DeviceId {
  if (isDeviceId(value)) return value;
  throw invalidId(field, value, '1 to 64 characters of a-z, 0-9, "_" or "-", starting with a letter or digit');
}

export function isOpId(value: unknown): value is OpId {
  return isCharsetString(value, LOWER_HEX, 64, 'op-');
}

export function isNameId(value: unknown): value is string {
  return typeof value === 'string' && NAME_ID.test(value);
}

export function parseAgentId(value: unknown, field = 'agent_id'): AgentId {
  return parseNameId(value, field) as AgentId;
}

export function parseRunId(value: unknown, field = 'run_id'): RunId {
  return parseNameId(value, field) as RunId;
}

export function parseConversationId(value: unknown, field = 'conversation_id'): ConversationId {
  return parseNameId(value, field) as ConversationId;
}

export function isCheckpointHash(value: unknown): value is CheckpointHash {
  return typeof value === 'string' && /^ck-[0-9a-f]{64}$/.test(value);
}

export function isEpoch(value: unknown): value is Epoch {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** No epoch granted yet: an agent's first lease is epoch 1. */
export const NO_EPOCH = 0 as Epoch;

/** The epoch after `epoch`, and the larger of two epochs: the only arithmetic epochs take. */
export function nextEpoch(epoch: Epoch): Epoch {
  return (epoch + 1) as Epoch;
}

export function maxEpoch(a: Epoch, b: Epoch): Epoch {
  return a >= b ? a : b;
}

function parseNameId(value: unknown, field: string): string {
  if (isNameId(value)) return value;
  throw invalidId(field, value, `1 to ${LIMITS.maxIdLength} characters of letters, digits or "._:@-", starting with a letter or digit`);
}

function invalidId(field: string, value: unknown, rule: string): OpsyncError {
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
  return new OpsyncError('invalid_id', `${field} ${shown} is not a valid id: it must be ${rule}.`, { field });
}
