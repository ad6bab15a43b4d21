import type { JsonObject } from '../util/json.js';
import type { ErrorCode } from '../util/opsync-error.js';
import type { ObjectSchema } from './schema.js';
import type { Unbranded } from '../oplog/ids.js';

/**
 * A typed RPC method descriptor (proposals/rpc.md §Methods): name, parameter schema, result description and
 * handler, in one place. The JSON-RPC server serves these and rpc.discover documents them.
 */
export interface MethodSpec<P = unknown, R = unknown> {
  readonly name: string;
  readonly summary: string;
  readonly params: ObjectSchema<P, unknown>;
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

/** A method descriptor that keeps its name, what a caller sends and what it answers in its type. */
export type TypedMethod<Name extends string, Input, Result> = MethodSpec & {
  readonly name: Name;
  /** Never set: carries the types a typed client calls with (`MethodMap`). */
  readonly types?: { readonly input: Input; readonly result: Result };
};

/** Keeps a method's parameter and result types attached to its handler, and to its name for typed clients. */
export function defineMethod<Name extends string, P, Input, R>(
  spec: MethodSpec<P, R> & { readonly name: Name; readonly params: ObjectSchema<P, Input> },
): TypedMethod<Name, Input, Awaited<R>> {
  // The types live in `types`, which no descriptor sets: a descriptor is what it was.
  return spec as MethodSpec as TypedMethod<Name, Input, Awaited<R>>;
}

/** Method name → what a caller sends and what comes back, for a union of typed descriptors. */
export type MethodMap<M extends TypedMethod<string, unknown, unknown>> = {
  [Each in M as Each['name']]: { input: Unbranded<NonNullable<Each['types']>['input']>; result: NonNullable<Each['types']>['result'] };
};

/** Shorthand for result descriptions: an object with these properties. */
export function resultObject(properties: Record<string, JsonObject>, description?: string): JsonObject {
  return { type: 'object', properties, ...(description ? { description } : {}) };
}
