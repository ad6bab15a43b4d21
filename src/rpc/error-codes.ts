import { isOpsyncError, type ErrorCode } from '../util/opsync-error.js';
import type { JsonObject } from '../util/json.js';

/**
 * The one mapping from named failures to JSON-RPC errors (proposals/rpc.md §Errors).
 * Bad parameters use the standard -32602; everything else a documented code in -32000..-32099.
 * The compiler checks that every ErrorCode has a number.
 */
export const RPC_PARSE_ERROR = -32700;
export const RPC_INVALID_REQUEST = -32600;
export const RPC_METHOD_NOT_FOUND = -32601;
export const RPC_INVALID_PARAMS = -32602;
export const RPC_INTERNAL_ERROR = -32603;

export const ERROR_NUMBERS: Readonly<Record<ErrorCode, number>> = {
  invalid_params: RPC_INVALID_PARAMS,
  invalid_id: RPC_INVALID_PARAMS,
  invalid_surface: RPC_INVALID_PARAMS,
  invalid_scope: RPC_INVALID_PARAMS,
  invalid_payload: RPC_INVALID_PARAMS,
  payload_too_large: RPC_INVALID_PARAMS,
  invalid_json: RPC_INVALID_PARAMS,
  invalid_record: RPC_INVALID_PARAMS,
  invalid_turn: RPC_INVALID_PARAMS,
  chain_broken: -32001,
  anchor_mismatch: -32002,
  unanchored: -32003,
  journal_corrupt: -32010,
  journal_locked: -32011,
  journal_mismatch: -32012,
  journal_version: -32013,
  journal_failed: -32014,
  relay_fork: -32020,
  relay_gap: -32021,
  relay_foreign_ops: -32022,
  relay_not_registered: -32023,
  relay_key_conflict: -32024,
  relay_frontier_truncated: -32025,
  relay_ack_regression: -32026,
  relay_unavailable: -32027,
  relay_invalid: -32028,
  checkpoint_invalid: -32030,
  checkpoint_not_found: -32031,
  checkpoint_unauthenticated: -32032,
  checkpoint_mismatch: -32033,
  key_missing: -32040,
  key_invalid: -32041,
  decrypt_failed: -32042,
  device_cloned: -32050,
  session_closed: -32052,
  lease_held: -32060,
  lease_lost: -32061,
  lease_backend_unavailable: -32062,
  lease_epochs_exhausted: -32063,
  unauthorized: -32070,
  config_invalid: -32071,
  answer_too_large: -32072,
};

export interface RpcError {
  readonly code: number;
  readonly message: string;
  readonly data: JsonObject;
}

/**
 * Maps a thrown value to a JSON-RPC error. Named failures keep their message and data (with the
 * name under `data.code`); anything else is a bug: the caller logs it, and the client sees only
 * "Internal error" — never the exception's text.
 */
export function toRpcError(error: unknown): RpcError & { expected: boolean } {
  if (isOpsyncError(error)) {
    return { code: ERROR_NUMBERS[error.code], message: error.message, data: { ...error.data, code: error.code }, expected: true };
  }
  return { code: RPC_INTERNAL_ERROR, message: 'Internal error', data: { code: 'internal' }, expected: false };
}
