import type { JsonObject } from '../util/json.js';
import { ERROR_CODES } from '../util/opsync-error.js';
import { ERROR_NUMBERS } from './error-codes.js';
import { defineMethod, type MethodSpec } from './method.js';
import { object } from './schema.js';

/**
 * rpc.discover: an OpenRPC 1.2.6 document generated from the same descriptors the JSON-RPC endpoint
 * serves, so a host — or an agent — can drive the daemon without other documentation.
 */
export function discoverMethod(methods: () => readonly MethodSpec[], version: string) {
  return defineMethod({
    name: 'rpc.discover',
    summary: 'This API as an OpenRPC document.',
    params: object({}),
    result: { type: 'object', description: 'OpenRPC 1.2.6 document' },
    handler: () => openRpcDocument(methods(), version),
  });
}

export function openRpcDocument(methods: readonly MethodSpec[], version: string): JsonObject {
  return {
    openrpc: '1.2.6',
    info: {
      title: 'opsync',
      version,
      description:
        'JSON-RPC 2.0 over WebSocket. Authenticate with `Authorization: Bearer <token>` (the token file in the data directory). ' +
        'Errors carry data.code naming the failure; see x-error-codes.',
    },
    methods: methods.map((method) => ({
      name: method.name,
      summary: method.summary,
      paramStructure: 'by-name',
      params: Object.entries(method.params.fields).map(([name, field]) => ({
        name,
        required: !field.optional,
        description: field.description,
        schema: field.schema.json,
      })),
      result: { name: 'result', schema: method.result },
      errors: (method.errors ?? []).map((code) => ({ code: ERROR_NUMBERS[code], message: code })),
    })),
    'x-error-codes': Object.fromEntries(ERROR_CODES.map((code) => [code, ERROR_NUMBERS[code]])),
  };
}
