import type { FoldedRecord } from '../fold/fold-op.js';
import { DEFAULT_CONVERSATION, type Role } from '../fold/payload-rules.js';
import type { Hlc } from '../oplog/hlc.js';
import type { DeviceId, OpId } from '../oplog/ids.js';
import type { JsonObject } from '../util/json.js';

export interface ToolCall {
  readonly id: string;
  readonly name: string;
  readonly input: JsonObject;
}

/** One recorded turn of a conversation, as `sync.transcript` returns it (proposals/conversation.md §Turns). */
export interface Turn {
  readonly op_id: OpId;
  readonly hlc: Hlc;
  readonly device_id: DeviceId;
  readonly conversation_id: string;
  readonly role: Role;
  readonly content: string;
  readonly tool_calls?: readonly ToolCall[];
  readonly tool_use_id?: string;
  readonly is_error?: boolean;
  readonly timestamp: number | string;
}

/** Reads a folded conversation record; the fold's payload rules have checked its fields. */
export function turnOf(record: FoldedRecord): Turn {
  const p = record.payload;
  return {
    op_id: record.op_id,
    hlc: record.hlc,
    device_id: record.device_id,
    conversation_id: (p.conversation_id as string | undefined) ?? DEFAULT_CONVERSATION,
    role: p.role as Role,
    content: p.content as string,
    ...(p.tool_calls !== undefined ? { tool_calls: p.tool_calls as unknown as ToolCall[] } : {}),
    ...(p.tool_use_id !== undefined ? { tool_use_id: p.tool_use_id as string } : {}),
    ...(p.is_error !== undefined ? { is_error: p.is_error as boolean } : {}),
    timestamp: p.timestamp as number | string,
  };
}
