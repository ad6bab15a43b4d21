import type { JsonObject } from '../util/json.js';
import type { ObjectSchema } from './schema.js';

/**
 * A typed RPC method descriptor (proposals/rpc.md §Methods): name, parameter schema, result description and
 * handler, in one place. The dispatcher serves these and rpc.discover documents them.
 */
export interface MethodSpec<P = unknown> {
  readonly name: string;
  readonly summary: string;
  readonly params: ObjectSchema<P>;
  /** JSON Schema of the result, for the OpenRPC document. */
  readonly result: JsonObject;
  /** Named failures this method may answer with (documentation). */
  readonly errors?: readonly string[];
  handler(params: P, call: CallContext): unknown;
}

/** What a handler may know about the connection it serves; it never sees a socket. */
export interface CallContext {
  readonly connection: Connection;
}

export interface Connection {
  readonly id: number;
  subscribed: boolean;
}

/** Keeps a method's parameter type attached to its handler. */
export function defineMethod<P>(spec: MethodSpec<P>): MethodSpec {
  return spec;
}

/** Shorthand for result descriptions: an object with these properties. */
export function resultObject(properties: Record<string, JsonObject>, description?: string): JsonObject {
  return { type: 'object', properties, ...(description ? { description } : {}) };
}
