import type { JsonObject } from '../util/json.js';
import type { ErrorCode } from '../util/opsync-error.js';
import type { ObjectSchema } from './schema.js';

/**
 * A typed RPC method descriptor (proposals/rpc.md §Methods): name, parameter schema, result description and
 * handler, in one place. The JSON-RPC server serves these and rpc.discover documents them.
 */
export interface MethodSpec<P = unknown, R = unknown> {
  readonly name: string;
  readonly summary: string;
  readonly params: ObjectSchema<P>;
  /** JSON Schema of the result `R`, for the OpenRPC document. */
  readonly result: JsonObject;
  /** Named failures this method may answer with, beyond invalid params (the OpenRPC document lists them). */
  readonly errors?: readonly ErrorCode[];
  handler(params: P, call: CallContext): R | Promise<R>;
}

/** What a handler may know about the connection it serves; it never sees a socket. */
export interface CallContext {
  readonly connection: Connection;
}

export interface Connection {
  readonly id: number;
  /** Whether it hears `sync.changed` (proposals/rpc.md §Change feed). */
  subscribed: boolean;
  /** The surfaces it hears of; null: all. */
  surfaces: ReadonlySet<string> | null;
}

/** Keeps a method's parameter and result types attached to its handler. */
export function defineMethod<P, R>(spec: MethodSpec<P, R>): MethodSpec {
  return spec;
}

/** Shorthand for result descriptions: an object with these properties. */
export function resultObject(properties: Record<string, JsonObject>, description?: string): JsonObject {
  return { type: 'object', properties, ...(description ? { description } : {}) };
}
