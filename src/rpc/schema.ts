import { NAME_ID } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { isJsonObject, jsonDepth, type JsonObject } from '../util/json.js';

/**
 * Parameter schemas: each one parses an untrusted value into a typed one (refusing it with a
 * named `invalid_params` error that says which field and why) and describes itself as JSON
 * Schema for the OpenRPC document — so validation and documentation cannot drift apart.
 */
export interface Schema<T> {
  readonly json: JsonObject;
  parse(value: unknown, path: string): T;
}

export interface Field<T, Optional extends boolean = boolean> {
  readonly schema: Schema<T>;
  readonly optional: Optional;
  readonly description: string;
}

export function required<T>(schema: Schema<T>, description: string): Field<T, false> {
  return { schema, optional: false, description };
}

export function optional<T>(schema: Schema<T>, description: string): Field<T | undefined, true> {
  return { schema: schema, optional: true, description };
}

export type ObjectOf<F extends Record<string, Field<unknown>>> = { [K in keyof F]: F[K] extends Field<infer T> ? T : never };

/** What a caller sends for fields `F`: required fields, and the optional ones as optional keys. */
export type InputOf<F extends Record<string, Field<unknown>>> = {
  [K in keyof F as F[K] extends Field<unknown, true> ? never : K]: F[K] extends Field<infer T> ? T : never;
} & { [K in keyof F as F[K] extends Field<unknown, true> ? K : never]?: F[K] extends Field<infer T> ? Exclude<T, undefined> : never };

/** Parses params into `T`; `Input` is what a caller sends (typed clients, proposals/rpc.md §Methods). */
export interface ObjectSchema<T, Input = T> extends Schema<T> {
  readonly fields: Readonly<Record<string, Field<unknown>>>;
  /** Never set: carries the input type. */
  readonly input?: Input;
}

/** A JSON object with exactly these fields (unknown fields are refused, so typos surface). */
export function object<F extends Record<string, Field<unknown>>>(fields: F): ObjectSchema<ObjectOf<F>, InputOf<F>> {
  const names = Object.keys(fields);
  return {
    fields,
    json: {
      type: 'object',
      additionalProperties: false,
      required: names.filter((name) => !fields[name]!.optional),
      properties: Object.fromEntries(names.map((name) => [name, { ...fields[name]!.schema.json, description: fields[name]!.description }])),
    },
    parse(value, path) {
      if (!isJsonObject(value)) throw invalid(path, 'must be an object');
      const unknown = Object.keys(value).filter((key) => !Object.hasOwn(fields, key));
      if (unknown.length > 0) throw invalid(`${path}.${unknown[0]!}`, `is not a parameter (expected ${names.join(', ') || 'none'})`);
      const out: Record<string, unknown> = {};
      for (const name of names) {
        const field = fields[name]!;
        const raw = value[name];
        if (raw === undefined) {
          if (!field.optional) throw invalid(`${path}.${name}`, 'is required');
          out[name] = undefined;
        } else out[name] = field.schema.parse(raw, `${path}.${name}`);
      }
      return out as ObjectOf<F>;
    },
  };
}

export function string(options: { maxLength?: number; pattern?: RegExp } = {}): Schema<string> {
  const { maxLength = 4096, pattern } = options;
  return {
    json: { type: 'string', maxLength, ...(pattern ? { pattern: pattern.source } : {}) },
    parse(value, path) {
      if (typeof value !== 'string') throw invalid(path, 'must be a string');
      if (value.length > maxLength) throw invalid(path, `must be at most ${maxLength} characters`);
      if (pattern && !pattern.test(value)) throw invalid(path, `must match ${pattern.source}`);
      return value;
    },
  };
}

export function integer(options: { min?: number; max?: number } = {}): Schema<number> {
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = options;
  return {
    json: { type: 'integer', minimum: min, maximum: max },
    parse(value, path) {
      if (!Number.isSafeInteger(value)) throw invalid(path, 'must be an integer');
      const n = value as number;
      if (n < min || n > max) throw invalid(path, `must be between ${min} and ${max}`);
      return n;
    },
  };
}

export function oneOf<T extends string>(values: readonly T[]): Schema<T> {
  return {
    json: { type: 'string', enum: [...values] },
    parse(value, path) {
      if (!values.includes(value as T)) throw invalid(path, `must be one of ${values.join(', ')}`);
      return value as T;
    },
  };
}

/** An array of at most `maxItems` values, each parsed by `items`. */
export function arrayOf<T>(items: Schema<T>, maxItems: number): Schema<T[]> {
  return {
    json: { type: 'array', items: items.json, maxItems },
    parse(value, path) {
      if (!Array.isArray(value)) throw invalid(path, 'must be an array');
      if (value.length > maxItems) throw invalid(path, `holds at most ${maxItems} values`);
      return value.map((item, i) => items.parse(item, `${path}[${i}]`));
    },
  };
}

/** Any JSON object, at most `maxDepth` deep (payloads, tool inputs). */
export function jsonObject(maxDepth: number): Schema<JsonObject> {
  return {
    json: { type: 'object' },
    parse(value, path) {
      if (!isJsonObject(value)) throw invalid(path, 'must be a JSON object');
      if (jsonDepth(value) > maxDepth) throw invalid(path, `is nested deeper than ${maxDepth} levels`);
      return value;
    },
  };
}

/** An agent, run or conversation id: documented by the id pattern, parsed by `parse`. */
export function nameId<T extends string>(parse: (value: unknown, path: string) => T): Schema<T> {
  return parsed({ type: 'string', pattern: NAME_ID.source }, parse);
}

/** Wraps a domain parser (ids, surfaces, scopes): its named error passes through, with the field. */
export function parsed<T>(json: JsonObject, parse: (value: unknown, path: string) => T): Schema<T> {
  return { json, parse };
}

export function invalid(path: string, reason: string): OpsyncError {
  return new OpsyncError('invalid_params', `${path} ${reason}.`, { field: path });
}
