import type { JsonObject } from '../util/json.js';
import type { Connection } from './method.js';

/**
 * One client connection's traffic, against a small socket port (`PeerSocket`) so that it is
 * tested in memory (test/unit/peer.test.ts); the WebSocket adapter is in rpc-server.ts
 * (proposals/rpc.md §Transport, backpressure).
 */
export interface PeerSocket {
  /** Whether frames can still be sent. */
  readonly open: boolean;
  /** Bytes sent and not yet taken by the client. */
  readonly bufferedAmount: number;
  /** Sends one text frame (corked for the rest of the turn, so the frames of one turn leave in one write). */
  send(text: string): void;
  readonly paused: boolean;
  /** Stops reading the client's frames. */
  pause(): void;
  resume(): void;
  /** Calls `listener` whenever buffered output was taken by the client. */
  onDrain(listener: () => void): void;
}

/** Per-connection limits (LIMITS by default; tests use small ones). */
export type ConnectionLimits = { readonly [K in 'maxInFlight' | 'maxUnsentBytes']: number };

/** What peers count, into the server's stats. */
export interface PeerStats {
  /** Times a connection's requests had to wait for its client to read its answers. */
  held_back: number;
  /** Notifications replaced by a newer one of the same method before a lagging client read them. */
  coalesced_notifications: number;
}

/** Requests of one connection started in one turn of the event loop, at most (see Peer). */
const MAX_STARTS_PER_TURN = 32;

/**
 * One client connection's traffic. A client that does not keep up is held back, never buffered
 * without bound:
 * - requests start in arrival order, at most `maxInFlight` in progress, none while more than
 *   `maxUnsentBytes` of answers wait unread, and at most MAX_STARTS_PER_TURN per turn of the
 *   event loop — one socket read can hold a thousand requests and a handler builds its answer
 *   before it is sent, so the answers of one turn must be counted before more start. While
 *   requests wait, the socket is not read, and nothing is lost: once the client reads, every
 *   answer arrives, in order;
 * - notifications cannot wait for a client, so while it lags they coalesce: a newer one of a
 *   method replaces the one not yet sent, which goes out once the client has read.
 * Output is corked for the rest of a turn, so the frames of one turn leave in one write.
 */
export class Peer {
  private waiting: string[] = [];
  private next = 0;
  private inFlight = 0;
  private startedThisTurn = 0;
  /** The client lagged at the last look (so that each hold-back is counted once). */
  private lagging = false;
  /** Notifications held while the client lags, one per method. */
  private readonly coalesced = new Map<string, JsonObject>();
  constructor(
    private readonly socket: PeerSocket,
    private readonly limits: ConnectionLimits,
    private readonly handle: (text: string) => Promise<string | null>,
    readonly connection: Connection,
    private readonly stats: PeerStats,
  ) {
    socket.onDrain(this.admit);
  }

  send(text: string): void {
    if (!this.socket.open) return;
    this.socket.send(text);
  }

  request(text: string): void {
    this.waiting.push(text);
    this.admit();
  }

  /**
   * Sends a notification, or holds it while the client lags: one held notification per method,
   * which `merge` folds a newer one into (without `merge`, the newer replaces it).
   */
  notify(method: string, params: JsonObject, merge?: Merge): void {
    if (this.coalesced.size === 0 && !this.lags()) this.send(notification(method, params));
    else {
      const held = this.coalesced.get(method);
      if (held) this.stats.coalesced_notifications++;
      this.coalesced.set(method, held && merge ? merge(held, params) : params);
    }
  }

  /** More than `maxUnsentBytes` of output wait for the client to read them. */
  private lags(): boolean {
    return this.socket.bufferedAmount > this.limits.maxUnsentBytes;
  }

  /** Sends held notifications and starts waiting requests as far as the client keeps up; runs on every change. */
  private readonly admit = (): void => {
    let lagging = this.lags();
    if (lagging && !this.lagging) this.stats.held_back++;
    if (!lagging && this.coalesced.size > 0) {
      for (const [method, params] of this.coalesced) this.send(notification(method, params));
      this.coalesced.clear();
    }
    while (
      !lagging &&
      this.next < this.waiting.length &&
      this.inFlight < this.limits.maxInFlight &&
      this.startedThisTurn < MAX_STARTS_PER_TURN
    ) {
      this.start(this.waiting[this.next++]!);
      lagging = this.lags();
    }
    this.lagging = lagging;
    const backlog = this.waiting.length - this.next;
    if (backlog === 0) {
      this.waiting = [];
      this.next = 0;
    }
    // Reading on would only queue more: stop while the client lags or an in-flight's worth waits.
    const stop = lagging || backlog >= this.limits.maxInFlight;
    if (stop && !this.socket.paused) this.socket.pause();
    else if (!stop && this.socket.paused) this.socket.resume();
  };

  private start(text: string): void {
    if (this.startedThisTurn++ === 0) setImmediate(this.nextTurn);
    this.inFlight++;
    void this.handle(text).then((answer) => {
      this.inFlight--;
      if (answer !== null) this.send(answer);
      this.admit();
    });
  }

  private readonly nextTurn = (): void => {
    this.startedThisTurn = 0;
    this.admit();
  };
}

/** Folds a newer notification's params into the older one's, for a client that lags. */
export type Merge = (older: JsonObject, newer: JsonObject) => JsonObject;

function notification(method: string, params: JsonObject): string {
  return JSON.stringify({ jsonrpc: '2.0', method, params });
}
