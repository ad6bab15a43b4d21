import type { Hlc } from '../oplog/hlc.js';
import type { DeviceId, OpId } from '../oplog/ids.js';
import type { Scope } from '../oplog/scope.js';
import type { Surface } from '../oplog/surface.js';
import type { JsonObject } from '../util/json.js';

/** What the fold consumes: an op whose payload has been decrypted (and whose chain was verified). */
export interface FoldOp {
  readonly op_id: OpId;
  readonly device_id: DeviceId;
  readonly hlc: Hlc;
  readonly scope: Scope;
  readonly surface: Surface;
  readonly payload: JsonObject;
}

/** A folded record keeps its winning op's id, stamp, device, scope and payload (proposals/fold.md §Rule). */
export interface FoldedRecord {
  readonly op_id: OpId;
  readonly hlc: Hlc;
  readonly device_id: DeviceId;
  readonly scope: Scope;
  readonly payload: JsonObject;
}

export type ApplyOutcome = 'inserted' | 'replaced' | 'unchanged' | 'skipped';
