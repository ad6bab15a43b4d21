import { isHlc } from './hlc.js';
import { isDeviceId, isOpId, type DeviceId } from './ids.js';
import type { ChainHead } from './op-record.js';
import { isJsonObject } from '../util/json.js';

/** Per device, the newest op of its chain that a state covers (a checkpoint frontier, a journal head). */
export type Frontier = ReadonlyMap<DeviceId, ChainHead>;

/** Per device, a seq: what a device has acked, what a pull starts after. -1 means nothing. */
export type SeqFrontier = ReadonlyMap<DeviceId, number>;

export function isChainHead(value: unknown): value is ChainHead {
  return (
    isJsonObject(value) &&
    Object.keys(value).length === 3 &&
    Number.isSafeInteger(value.seq) &&
    (value.seq as number) >= 0 &&
    isOpId(value.op_id) &&
    isHlc(value.hlc)
  );
}

/** Parses `{device: {seq, op_id, hlc}}` from untrusted JSON; null when anything is off. */
export function parseFrontier(value: unknown): Frontier | null {
  if (!isJsonObject(value)) return null;
  const frontier = new Map<DeviceId, ChainHead>();
  for (const [device, head] of Object.entries(value)) {
    if (!isDeviceId(device) || !isChainHead(head) || head.hlc.device_id !== device) return null;
    frontier.set(device, head);
  }
  return frontier;
}

/** Parses `{device: seq}` from untrusted JSON; null when anything is off. */
export function parseSeqFrontier(value: unknown): SeqFrontier | null {
  if (!isJsonObject(value)) return null;
  const frontier = new Map<DeviceId, number>();
  for (const [device, seq] of Object.entries(value)) {
    if (!isDeviceId(device) || !Number.isSafeInteger(seq) || (seq as number) < -1) return null;
    frontier.set(device, seq as number);
  }
  return frontier;
}

/** A frontier as a plain JSON object with devices in sorted order (its canonical shape). */
export function frontierToJson(frontier: Frontier): Record<string, ChainHead> {
  const out: Record<string, ChainHead> = {};
  for (const device of [...frontier.keys()].sort()) out[device] = frontier.get(device)!;
  return out;
}

export function seqFrontierToJson(frontier: SeqFrontier): Record<string, number> {
  const out: Record<string, number> = {};
  for (const device of [...frontier.keys()].sort()) out[device] = frontier.get(device)!;
  return out;
}

export function seqsOf(frontier: Frontier): Map<DeviceId, number> {
  return new Map([...frontier].map(([device, head]) => [device, head.seq]));
}
