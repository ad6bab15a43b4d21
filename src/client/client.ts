import type { Change, MethodName, OpsyncMethods } from '../rpc/api.js';

/**
 * The typed client hosts use (proposals/rpc.md §Client). One source for Node and browsers: it
 * speaks to a WebSocket through the part of the browser's API that `ws` also implements, and
 * imports nothing from Node; `node.ts` and `browser.ts` say how to reach the daemon.
 *
 * - calls are typed by `OpsyncMethods`, derived from the descriptors the daemon serves, and
 *   namespaced: `client.sync.append({...})`, `client.lease.acquire({...})`;
 * - a failure is one error class, `OpsyncRpcError`, with the JSON-RPC code and the daemon's
 *   name for it (`kind`, `data.code`);
 * - every call has a timeout (30 s by default) and takes an `AbortSignal`;
 * - it frames requests itself (an id, a map of calls in flight): json-rpc-2.0, which the daemon
 *   serves with, ships CommonJS only, which a browser cannot import without a bundler;
 * - a lost connection is made again with jittered exponential backoff, asking `locate` again
 *   first (a daemon restarted on port 0 listens elsewhere); the subscription is renewed; calls
 *   made meanwhile wait for the connection (within their timeout), and calls that were in flight
 *   reject with `connection_lost`: the daemon may or may not have run them.
 */

/** The part of a WebSocket the client uses: the browser's API, which `ws` implements too. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** How to reach the daemon now: asked before every connection. */
export type Locate = () => Promise<() => WebSocketLike>;

export interface ClientOptions {
  /** Per-call timeout unless a call says otherwise (default 30 000 ms). */
  readonly timeoutMs?: number;
  /** Make a lost connection again (default true). */
  readonly reconnect?: boolean;
  /** First and largest wait between attempts, before jitter (default 100 and 5 000 ms). */
  readonly backoffMs?: { readonly first: number; readonly max: number };
}

export interface CallOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export type ConnectionState = 'open' | 'reconnecting' | 'closed';

type Input<M extends MethodName> = OpsyncMethods[M]['input'];
type Result<M extends MethodName> = OpsyncMethods[M]['result'];
/** A method whose params may all be left out can be called without any. */
type Call<M extends MethodName> =
  Record<string, never> extends Input<M>
    ? (params?: Input<M>, options?: CallOptions) => Promise<Result<M>>
    : (params: Input<M>, options?: CallOptions) => Promise<Result<M>>;
/** The methods of one namespace (`sync`, `lease`, `rpc`), by their names within it. */
export type Namespace<P extends string> = { [M in MethodName as M extends `${P}.${infer Rest}` ? Rest : never]: Call<M> };

/** A failed call: the JSON-RPC `code`, the daemon's name for the failure (`kind`) and its `data`. */
export class OpsyncRpcError extends Error {
  override readonly name = 'OpsyncRpcError';
  constructor(
    readonly code: number,
    message: string,
    readonly data: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
  }

  /** `data.code`: `lease_held`, `invalid_params` …, or the client's own `timeout`, `aborted`, `connection_lost`, `closed`. */
  get kind(): string {
    return typeof this.data.code === 'string' ? this.data.code : 'unknown';
  }
}

/** The code of the failures the client itself names (`timeout`, `aborted`, `connection_lost`, `closed`): no daemon error uses it. */
const CLIENT_ERROR = -32099;

export class OpsyncClient {
  readonly sync: Namespace<'sync'>;
  readonly lease: Namespace<'lease'>;
  readonly rpc: Namespace<'rpc'>;
  private ws: WebSocketLike | null = null;
  /** Calls sent and not answered, by id: each hears its answer, or the failure that ends it. */
  private readonly inFlight = new Map<number, (answer: Answer | OpsyncRpcError) => void>();
  private nextId = 1;
  private state: ConnectionState = 'reconnecting';
  private subscription: Input<'sync.subscribe'> | null = null;
  /** Calls made while the connection is not open: sent once it is, or failed. */
  private readonly waiting = new Map<() => void, (kind: string, message: string) => void>();
  private readonly changeListeners = new Set<(change: Change) => void>();
  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  private attempt = 0;
  private retry: ReturnType<typeof setTimeout> | null = null;

  private constructor(
    private readonly locate: Locate,
    private readonly options: ClientOptions,
  ) {
    this.sync = this.namespace('sync');
    this.lease = this.namespace('lease');
    this.rpc = this.namespace('rpc');
  }

  /** Connects, or rejects with why the first connection failed. */
  static async connect(locate: Locate, options: ClientOptions = {}): Promise<OpsyncClient> {
    const client = new OpsyncClient(locate, options);
    await client.open();
    return client;
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  /** Calls `method`; rejects with `OpsyncRpcError`. */
  async call<M extends MethodName>(method: M, params: Input<M>, options: CallOptions = {}): Promise<Result<M>> {
    const timeoutMs = options.timeoutMs ?? this.options.timeoutMs ?? 30_000;
    return new Promise<Result<M>>((resolve, reject) => {
      let settled = false;
      let id: number | null = null;
      const finish = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        this.waiting.delete(send);
        if (id !== null) this.inFlight.delete(id);
        outcome();
      };
      const fail = (kind: string, message: string) => finish(() => reject(new OpsyncRpcError(CLIENT_ERROR, message, { code: kind })));
      const onAbort = () => fail('aborted', `${method} was aborted.`);
      const timer = setTimeout(() => fail('timeout', `${method} had no answer within ${timeoutMs} ms.`), timeoutMs);
      const send = () => {
        this.waiting.delete(send);
        id = this.exchange(method, params ?? {}, (answer) => finish(() => answered(answer, resolve, reject)));
      };
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (this.state === 'closed') return fail('closed', `${method}: the client was closed.`);
      if (this.state === 'open') send();
      else this.waiting.set(send, fail);
    });
  }

  /** Subscribes to the change feed (renewed after every reconnect); `listener` hears each change. */
  async subscribe(params: Input<'sync.subscribe'> = {}, listener?: (change: Change) => void): Promise<void> {
    if (listener) this.changeListeners.add(listener);
    this.subscription = params;
    await this.call('sync.subscribe', params);
  }

  onChange(listener: (change: Change) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Hears the connection go `reconnecting`, `open` again, or `closed`. */
  onState(listener: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Closes the connection for good: calls waiting or in flight reject with `closed`. */
  close(): void {
    this.setState('closed');
    if (this.retry) clearTimeout(this.retry);
    for (const fail of [...this.waiting.values()]) fail('closed', 'the client was closed before the call could be sent.');
    this.endInFlight('closed', 'the client was closed before the daemon answered.');
    this.ws?.close(1000, 'client closed');
  }

  private namespace<P extends string>(prefix: P): Namespace<P> {
    return new Proxy({} as Namespace<P>, {
      // Not `then`: a namespace must not look like a promise to `await`.
      get: (_target, name) =>
        typeof name === 'string' && name !== 'then'
          ? (params?: object, options?: CallOptions) => this.call(`${prefix}.${name}` as MethodName, params ?? {}, options)
          : undefined,
    });
  }

  /** Opens a connection; resolves once it is open, rejects with why it could not be. */
  private async open(): Promise<void> {
    const ws = (await this.locate())();
    this.ws = ws;
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () =>
        reject(
          new OpsyncRpcError(CLIENT_ERROR, 'Cannot reach the daemon (refused, or nothing listens there).', { code: 'connection_lost' }),
        );
      ws.onclose = ({ code }) =>
        reject(new OpsyncRpcError(CLIENT_ERROR, `The daemon closed the connection (${code}).`, { code: 'connection_lost' }));
    });
    ws.onmessage = ({ data }) => this.receive(String(data));
    // Kept, not cleared: a socket error without a listener would be thrown (ws); the close that follows is what counts.
    ws.onerror = () => undefined;
    ws.onclose = () => this.lost(ws);
    this.attempt = 0;
    const subscription = this.subscription;
    if (subscription)
      await new Promise<void>((resolve, reject) =>
        this.exchange('sync.subscribe', subscription, (answer) => answered(answer, () => resolve(), reject)),
      );
    this.setState('open');
    for (const send of [...this.waiting.keys()]) send();
  }

  private receive(text: string): void {
    let message: { method?: unknown; params?: unknown } | null;
    try {
      message = JSON.parse(text) as typeof message;
    } catch {
      return;
    }
    if (!message || typeof message !== 'object' || Array.isArray(message)) return;
    if (message.method === 'sync.changed') for (const listener of this.changeListeners) listener(message.params as Change);
    const { id } = message as { id?: unknown };
    const waiter = typeof id === 'number' ? this.inFlight.get(id) : undefined;
    if (waiter) {
      this.inFlight.delete(id as number);
      waiter(message as Answer);
    }
  }

  /** Sends a request now; `done` hears its answer, or the failure that ends it. Returns its id. */
  private exchange(method: string, params: unknown, done: (answer: Answer | OpsyncRpcError) => void): number {
    const id = this.nextId++;
    this.inFlight.set(id, done);
    this.ws?.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    return id;
  }

  private endInFlight(kind: 'closed' | 'connection_lost', why: string): void {
    const ended = [...this.inFlight.values()];
    this.inFlight.clear();
    for (const done of ended) done(new OpsyncRpcError(CLIENT_ERROR, why, { code: kind }));
  }

  private lost(ws: WebSocketLike): void {
    if (this.ws !== ws || this.state === 'closed') return;
    this.endInFlight('connection_lost', 'the connection closed before the daemon answered; the daemon may or may not have run the call.');
    // Lost while an open was renewing the subscription: that open fails, and tries again itself.
    if (this.state !== 'open') return;
    if (this.options.reconnect === false) return this.close();
    this.setState('reconnecting');
    this.schedule();
  }

  private schedule(): void {
    const { first, max } = this.options.backoffMs ?? { first: 100, max: 5_000 };
    // Full jitter: many clients of one restarted daemon do not come back at the same moment.
    const delay = Math.random() * Math.min(max, first * 2 ** this.attempt++);
    this.retry = setTimeout(() => {
      this.retry = null;
      this.open().catch(() => {
        if (this.state !== 'closed') this.schedule();
      });
    }, delay);
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }
}

/** A JSON-RPC response: its result, or its error. */
interface Answer {
  readonly result?: unknown;
  readonly error?: { readonly code: number; readonly message: string; readonly data?: Record<string, unknown> };
}

function answered<T>(answer: Answer | OpsyncRpcError, resolve: (result: T) => void, reject: (error: OpsyncRpcError) => void): void {
  if (answer instanceof OpsyncRpcError) reject(answer);
  else if (answer.error) reject(new OpsyncRpcError(answer.error.code, answer.error.message, answer.error.data ?? {}));
  else resolve(answer.result as T);
}
