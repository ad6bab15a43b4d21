import { JSONRPCServer, createJSONRPCErrorResponse, type JSONRPCRequest, type JSONRPCResponse } from 'json-rpc-2.0';
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
import { OpsyncError } from '../util/opsync-error.js';
import type { Connection, MethodSpec } from './method.js';

export interface EndpointLog {
  error(fields: object, message: string): void;
}

export interface EndpointStats {
  requests: number;
  errors: number;
  internal_errors: number;
  /**
   * Requests by method and outcome (`ok`, or the error's name); a method this endpoint does not
   * serve counts as `(unknown)` and a malformed request as `(invalid)`, so the labels stay a bounded set.
   */
  by_method: Record<string, Record<string, number>>;
}

/**
 * JSON-RPC 2.0 over any transport that carries text (proposals/rpc.md §Protocol). json-rpc-2.0's
 * `JSONRPCServer` runs each request, with middleware that answers an unknown method by name,
 * parses the params against the method's descriptor, and maps failures to their codes. Around it,
 * this endpoint does what that server does not do to the letter of the specification, and says
 * so in proposals/rpc.md: it parses text with a depth bound, answers a batch always with an array
 * (the server answers a batch with one response as a bare object), bounds batches, refuses
 * malformed request objects before the server sees them (it reads `payload.jsonrpc` of `null`),
 * and turns an answer that cannot become text into an error. It never touches a socket.
 *
 * - unparseable text → -32700; nesting deeper than the message depth limit, an empty batch, a batch
 *   over the batch limit, or an element that is not a request → -32600;
 * - a batch always answers with an array; a batch of only notifications answers nothing;
 * - unknown method → -32601 naming it; bad params → -32602 naming the field; named failures → their
 *   documented code; anything else → -32603 "Internal error", logged, never echoed;
 * - an answer that cannot become text (past V8's string limit: `answer_too_large`; not JSON: a
 *   bug, -32603) is answered as that error, in its place in a batch. `handle` never rejects.
 */
export class RpcEndpoint {
  readonly stats: EndpointStats = { requests: 0, errors: 0, internal_errors: 0, by_method: {} };
  private readonly server = new JSONRPCServer<Connection>({ errorListener: () => {} });

  constructor(
    readonly methods: readonly MethodSpec[],
    private readonly log: EndpointLog,
  ) {
    const byName = new Map(methods.map((method) => [method.name, method]));
    for (const method of methods)
      this.server.addMethod(method.name, async (params, connection) => (await method.handler(params, { connection })) ?? null);
    this.server.applyMiddleware(
      (next, request, connection) => {
        if (byName.has(request.method)) return next(request, connection);
        this.count('(unknown)', 'method_not_found');
        return Promise.resolve(methodNotFound(request));
      },
      (next, request, connection) => this.failuresAnswered(() => next(request, connection), request),
      (next, request, connection) => next({ ...request, params: paramsOf(byName.get(request.method)!, request) }, connection),
    );
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
      this.count('(invalid)', 'invalid_request');
      const id = isJsonObject(message) && isId(message.id) ? message.id : null;
      return createJSONRPCErrorResponse(id, RPC_INVALID_REQUEST, `Invalid Request: ${problem}`, { code: 'invalid_request' });
    }
    const response = await this.server.receive(message as unknown as JSONRPCRequest, connection);
    if (response && 'error' in response) this.stats.errors++;
    return response;
  }

  /** Runs a call; a failure becomes its named error (an unexpected one is logged, never echoed). */
  private async failuresAnswered(
    call: () => PromiseLike<JSONRPCResponse | null>,
    request: JSONRPCRequest,
  ): Promise<JSONRPCResponse | null> {
    try {
      const response = await call();
      this.count(request.method, 'ok');
      return response;
    } catch (error) {
      const rpc = toRpcError(error);
      this.count(request.method, typeof rpc.data?.code === 'string' ? rpc.data.code : 'internal');
      if (!rpc.expected) {
        this.stats.internal_errors++;
        this.log.error({ err: error, method: request.method }, 'method failed unexpectedly');
      }
      return request.id === undefined ? null : createJSONRPCErrorResponse(request.id, rpc.code, rpc.message, rpc.data);
    }
  }

  private count(method: string, outcome: string): void {
    const outcomes = (this.stats.by_method[method] ??= {});
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
  }
}

/** -32601 naming the method (none for a notification). */
function methodNotFound(request: JSONRPCRequest): JSONRPCResponse | null {
  if (request.id === undefined) return null;
  const method = request.method.slice(0, 128);
  const why = `Method not found: ${JSON.stringify(method)} (rpc.discover lists every method)`;
  return createJSONRPCErrorResponse(request.id, RPC_METHOD_NOT_FOUND, why, { code: 'method_not_found', method });
}

/** The request's params parsed against the method's descriptor (named parameters only), or `invalid_params`. */
function paramsOf(method: MethodSpec, request: JSONRPCRequest): unknown {
  if (request.params !== undefined && !isJsonObject(request.params)) {
    throw new OpsyncError('invalid_params', 'params must be an object of named parameters.', { field: 'params' });
  }
  return method.params.parse(request.params ?? {}, 'params');
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
