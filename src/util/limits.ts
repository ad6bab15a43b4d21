/**
 * Every external input has a limit (design §11). The values are chosen so that a real
 * conversation turn or knowledge record fits with room to spare, while one client or peer
 * cannot make the daemon hold unbounded memory for a single request.
 */
export const LIMITS = {
  /** Canonical JSON bytes of one plaintext payload. A long assistant turn with code is ~100 KiB. */
  maxPayloadBytes: 1024 * 1024,
  /** Nesting depth of any JSON document we parse (RPC frame, payload, relay file line). */
  maxJsonDepth: 64,
  /** Length of an identifier (agent, run, conversation, record id). */
  maxIdLength: 128,
  /** Length of a record key (`payload.id`) inside a surface. */
  maxRecordKeyLength: 512,
  /** One WebSocket frame: a payload at its limit, base64-free, plus envelope and batch overhead. */
  maxFrameBytes: 4 * 1024 * 1024,
  /** Requests in one JSON-RPC batch. */
  maxBatchLength: 256,
} as const;
