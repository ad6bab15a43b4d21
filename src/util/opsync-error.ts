import type { JsonObject } from './json.js';

/**
 * The closed list of named failures. Every expected failure anywhere in opsync carries one
 * of these codes; the RPC layer maps each to a documented JSON-RPC code (src/rpc/error-codes.ts),
 * and the compiler checks that the mapping covers the whole list.
 *
 * It lives in oplog, the lowest domain layer, because relay/ may import only from here.
 */
export const ERROR_CODES = [
  // input validation
  'invalid_params',
  'invalid_id',
  'invalid_surface',
  'invalid_scope',
  'invalid_payload',
  'payload_too_large',
  'invalid_json',
  'invalid_record',
  'invalid_turn',
  // records and chains
  'chain_broken',
  'anchor_mismatch',
  'unanchored',
  // journal
  'journal_corrupt',
  'journal_locked',
  'journal_mismatch',
  'journal_version',
  'journal_failed',
  // relay
  'relay_fork',
  'relay_gap',
  'relay_foreign_ops',
  'relay_not_registered',
  'relay_key_conflict',
  'relay_frontier_truncated',
  'relay_ack_regression',
  'relay_unavailable',
  'relay_invalid',
  // checkpoints and compaction
  'checkpoint_invalid',
  'checkpoint_not_found',
  'checkpoint_unauthenticated',
  'checkpoint_mismatch',
  // keys and envelopes
  'key_missing',
  'key_invalid',
  'decrypt_failed',
  // session
  'device_cloned',
  'session_closed',
  // leases and intents
  'lease_held',
  'lease_lost',
  'lease_backend_unavailable',
  'lease_epochs_exhausted',
  // daemon and transport
  'unauthorized',
  'config_invalid',
  'answer_too_large',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** One error class for every expected failure; `data` names the specifics for machines. */
export class OpsyncError extends Error {
  override readonly name = 'OpsyncError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly data: JsonObject = {},
  ) {
    super(message);
  }
}

export function isOpsyncError(value: unknown): value is OpsyncError {
  return value instanceof OpsyncError;
}
