import {
  JSONRPCServer,
  createJSONRPCErrorResponse,
  createJSONRPCSuccessResponse,
  type JSONRPCRequest,
  type JSONRPCResponse,
} from 'json-rpc-2.0';
import { isJsonObject, parseJsonText, type JsonValue } from '../util/json.js';
import { LIMITS } from '../util/limits.js';
import {
  ERROR_NUMBERS,
  RPC_INTERNAL_ERROR,
  RPC_INVALID_REQUEST,
  RPC_METHOD_NOT_FOUND,
  RPC_PARSE_ERROR,
  toRpcError,
} from './error-codes.js';
import { OpsyncError } from '../oplog/opsync-error.js';
import type { Connection, MethodSpec } from './method.js';

export interface DispatcherLog {
  error(fields: object, message: string): void;
}

export interface DispatcherStats {
  requests: number;
  errors: number;
  internal_errors: number;
}

/**
 * JSON-RPC 2.0 over any transport that carries text: parse, limits, batches and notifications
 * exactly per the specification, then the method descriptors. It never touches a socket.
 *
 * - unparseable text → -32700; nesting deeper than the message depth limit, an empty batch, a batch
 *   over the batch limit, or an element that is not a request → -32600;
 * - a batch always answers with an array; a batch of only notifications answers nothing;
 * - unknown method → -32601 naming it; bad params → -32602 naming the field; named failures → their
 *   documented code; anything else → -32603 "Internal error", logged, never echoed;
 * - an answer that cannot become text (past V8's string limit: `answer_too_large`; not JSON: a
 *   bug, -32603) is answered as that error, in its place in a batch. `handle` never rejects.
 */
export class Dispatcher {
  readonly stats: DispatcherStats = { requests: 0, errors: 0, internal_errors: 0 };
  private readonly server = new JSONRPCServer<Connection>({ errorListener: () => {} });

  constructor(
    readonly methods: readonly MethodSpec[],
    private readonly log: DispatcherLog,
  ) {
    for (const method of methods)
      this.server.addMethodAdvanced(method.name, (request, connection) => this.call(method, request, connection));
  }

  /** The answer to one incoming message, or null when none is due (notifications). */
  async handle(text: string, connection: Connection): Promise<string | null> {
    const parsed = parseJsonText(text, LIMITS.maxMessageDepth);
    if (!parsed.ok) {
      this.stats.errors++;
      return parsed.reason === 'syntax'
        ? JSON.stringify(createJSONRPCErrorResponse(null, RPC_PARSE_ERROR, 'Parse error', { code: 'parse_error' }))
        : JSON.stringify(createJSONRPCErrorResponse(null, RPC_INVALID_REQUEST, parsed.message, { code: 'invalid_json' }));
    }
    const message = parsed.value;
    if (!Array.isArray(message)) {
      const response = await this.single(message, connection);
      return response ? this.text(response) : null;
    }
    if (message.length === 0 || message.length > LIMITS.maxBatchLength) {
      this.stats.errors++;
      const why =
        message.length === 0 ? 'Invalid Request: empty batch' : `Invalid Request: a batch holds at most ${LIMITS.maxBatchLength} requests`;
      return JSON.stringify(createJSONRPCErrorResponse(null, RPC_INVALID_REQUEST, why, { code: 'invalid_request' }));
    }
    const responses = (await Promise.all(message.map((element) => this.single(element, connection)))).filter((r) => r !== null);
    return responses.length > 0 ? `[${responses.map((response) => this.text(response)).join(',')}]` : null;
  }

  private text(response: JSONRPCResponse): string {
    try {
      return JSON.stringify(response);
    } catch (error) {
      this.stats.errors++;
      if (error instanceof RangeError) {
        const message =
          'The answer is too large to send in one message (over 512 MiB of JSON); ask for less, with limit and after where the method has them.';
        return JSON.stringify(
          createJSONRPCErrorResponse(response.id, ERROR_NUMBERS.answer_too_large, message, { code: 'answer_too_large' }),
        );
      }
      this.stats.internal_errors++;
      this.log.error({ err: error }, 'an answer could not be serialized');
      return JSON.stringify(createJSONRPCErrorResponse(response.id, RPC_INTERNAL_ERROR, 'Internal error', { code: 'internal' }));
    }
  }

  private async single(message: JsonValue, connection: Connection): Promise<JSONRPCResponse | null> {
    this.stats.requests++;
    const problem = requestProblem(message);
    if (problem) {
      this.stats.errors++;
      const id = isJsonObject(message) && isId(message.id) ? message.id : null;
      return createJSONRPCErrorResponse(id, RPC_INVALID_REQUEST, `Invalid Request: ${problem}`, { code: 'invalid_request' });
    }
    const request = message as unknown as JSONRPCRequest;
    if (!this.server.hasMethod(request.method)) {
      this.stats.errors++;
      const why = `Method not found: ${JSON.stringify(request.method.slice(0, 128))} (rpc.discover lists every method)`;
      return request.id === undefined
        ? null
        : createJSONRPCErrorResponse(request.id, RPC_METHOD_NOT_FOUND, why, {
            code: 'method_not_found',
            method: request.method.slice(0, 128),
          });
    }
    const response = await this.server.receive(request, connection);
    if (response && 'error' in response) this.stats.errors++;
    return response;
  }

  private async call(method: MethodSpec, request: JSONRPCRequest, connection: Connection): Promise<JSONRPCResponse | null> {
    const id = request.id;
    try {
      if (request.params !== undefined && !isJsonObject(request.params)) {
        throw new OpsyncError('invalid_params', 'params must be an object of named parameters.', { field: 'params' });
      }
      const params = method.params.parse(request.params ?? {}, 'params');
      const result: unknown = await method.handler(params, { connection });
      return id === undefined ? null : createJSONRPCSuccessResponse(id, result ?? null);
    } catch (error) {
      const rpc = toRpcError(error);
      if (!rpc.expected) {
        this.stats.internal_errors++;
        this.log.error({ err: error, method: method.name }, 'method failed unexpectedly');
      }
      return id === undefined ? null : createJSONRPCErrorResponse(id, rpc.code, rpc.message, rpc.data);
    }
  }
}

function requestProblem(message: JsonValue): string | null {
  if (!isJsonObject(message)) return 'a request must be an object';
  if (message.jsonrpc !== '2.0') return 'jsonrpc must be "2.0"';
  if (typeof message.method !== 'string') return 'method must be a string';
  if ('id' in message && !isId(message.id)) return 'id must be a string, a number or null';
  if ('params' in message && (typeof message.params !== 'object' || message.params === null)) return 'params must be an object or an array';
  if ('result' in message || 'error' in message) return 'a request carries no result or error';
  return null;
}

function isId(value: unknown): value is string | number | null {
  return value === null || typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value));
}
