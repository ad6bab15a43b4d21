/**
 * Every external input has a limit (proposals/threat-model.md, proposals/rpc.md §Requests). The values are chosen so that a real
 * conversation turn or knowledge record fits with room to spare, while one client or peer
 * cannot make the daemon hold unbounded memory for a single request.
 */
export const LIMITS = {
  /** Canonical JSON bytes of one plaintext payload. A long assistant turn with code is ~100 KiB. */
  maxPayloadBytes: 1024 * 1024,
  /** Nesting depth of a payload (and of any stored JSON document). */
  maxJsonDepth: 64,
  /**
   * Nesting depth of a whole RPC message, checked before it is parsed so JSON.parse never
   * recurses deeper. Above the payload limit, so that a too-deep payload is answered as invalid
   * params of its request (with its id) rather than as an unreadable message.
   */
  maxMessageDepth: 128,
  /** Length of an identifier (agent, run, conversation, record id). */
  maxIdLength: 128,
  /** Length of a record key (`payload.id`) inside a surface. */
  maxRecordKeyLength: 512,
  /** One WebSocket frame: a payload at its limit, base64-free, plus envelope and batch overhead. */
  maxFrameBytes: 4 * 1024 * 1024,
  /** Requests in one JSON-RPC batch. */
  maxBatchLength: 256,
  /** Requests one connection has in progress; more wait until answers go out. */
  maxInFlight: 1024,
  /** Output a connection has not read yet, in bytes, above which its requests wait and its notifications coalesce. */
  maxUnsentBytes: 8 * 2 ** 20,
} as const;
