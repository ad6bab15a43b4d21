import { parseSeqFrontier, type SeqFrontier } from '../../src/oplog/frontier.js';
import { CHECKPOINT_FILE } from '../port/checkpoint-files.js';

/**
 * A reader's damage report in the directory relay, `devices/<device_id>/damage.json`, format
 * version 1 (proposals/relay.md §Damaged segments, §Damaged checkpoints):
 *
 *     {"opsync_damage":1,"stopped":{device:seq},"checkpoints":[hash]}
 *
 * `stopped`: per device, the first seq the reader cannot get past; `checkpoints`: checkpoints it
 * found damaged. Written by its reader only; read by every device, as untrusted input.
 */
export const DAMAGE_FILE = 'damage.json';

export interface DamageReport {
  readonly stopped: SeqFrontier;
  readonly checkpoints: readonly string[];
}

/** The file's text: entries in a fixed order, so that an unchanged report has unchanged text. */
export function encodeDamageReport(report: DamageReport): string {
  const stopped = Object.fromEntries([...report.stopped].sort(([a], [b]) => (a < b ? -1 : 1)));
  return JSON.stringify({ opsync_damage: 1, stopped, checkpoints: [...report.checkpoints].sort() }) + '\n';
}

export const NO_DAMAGE = encodeDamageReport({ stopped: new Map(), checkpoints: [] });

/** The report a parsed file holds; null when it is not one. Checkpoint hashes that are not hashes are dropped. */
export function decodeDamageReport(value: Record<string, unknown> | null): DamageReport | null {
  const stopped = value?.opsync_damage === 1 ? parseSeqFrontier(value.stopped) : null;
  const checkpoints = value?.checkpoints ?? [];
  if (!stopped || !Array.isArray(checkpoints)) return null;
  return {
    stopped,
    checkpoints: checkpoints.filter((hash): hash is string => typeof hash === 'string' && CHECKPOINT_FILE.test(`${hash}.jsonl`)),
  };
}
