import { describe, expect, it } from 'vitest';
import { Peer, type PeerSocket, type PeerStats } from '../../src/rpc/peer.js';

/** A socket whose client reads when the test says so: `buffered` is what it has not taken yet. */
class FakeSocket implements PeerSocket {
  readonly sent: string[] = [];
  buffered = 0;
  paused = false;
  private drain: () => void = () => {};

  get open(): boolean {
    return true;
  }

  get bufferedAmount(): number {
    return this.buffered;
  }

  send(text: string): void {
    this.sent.push(text);
    this.buffered += text.length;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  onDrain(listener: () => void): void {
    this.drain = listener;
  }

  /** The client reads everything sent so far. */
  read(): void {
    this.buffered = 0;
    this.drain();
  }
}

/** A handler whose answers the test releases one by one. */
function heldHandler() {
  const started: string[] = [];
  const waiting: Array<() => void> = [];
  const handle = (text: string) =>
    new Promise<string>((resolve) => {
      started.push(text);
      waiting.push(() => resolve(`answer to ${text}`));
    });
  return { started, handle, answerAll: () => waiting.splice(0).forEach((answer) => answer()) };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("a peer (one connection's backpressure)", () => {
  it('starts requests in arrival order up to the in-flight limit, and the rest as answers go out', async () => {
    const socket = new FakeSocket();
    const { started, handle, answerAll } = heldHandler();
    const stats: PeerStats = { held_back: 0, coalesced_notifications: 0 };
    const peer = new Peer(socket, { maxInFlight: 2, maxUnsentBytes: 1_000 }, handle, { id: 1, subscribed: true, surfaces: null }, stats);
    for (const n of [1, 2, 3, 4]) peer.request(`r${n}`);
    expect(started).toEqual(['r1', 'r2']);
    expect(socket.paused).toBe(true);
    answerAll();
    await settle();
    expect(started).toEqual(['r1', 'r2', 'r3', 'r4']);
    answerAll();
    await settle();
    expect(socket.sent).toEqual(['answer to r1', 'answer to r2', 'answer to r3', 'answer to r4']);
  });

  it('holds requests back while the client has not read its answers, and loses none once it reads', async () => {
    const socket = new FakeSocket();
    const { started, handle, answerAll } = heldHandler();
    const stats: PeerStats = { held_back: 0, coalesced_notifications: 0 };
    const peer = new Peer(socket, { maxInFlight: 10, maxUnsentBytes: 20 }, handle, { id: 1, subscribed: true, surfaces: null }, stats);
    peer.request('r1');
    answerAll();
    await settle();
    socket.buffered = 100; // the client stopped reading
    peer.request('r2');
    peer.request('r3');
    expect(started).toEqual(['r1']);
    expect(socket.paused).toBe(true);
    expect(stats.held_back).toBe(1);
    socket.read();
    expect(started).toEqual(['r1', 'r2', 'r3']);
    expect(socket.paused).toBe(false);
  });

  it('coalesces the notifications of a client that lags: once it reads, one per method, merged where the method merges', () => {
    const socket = new FakeSocket();
    const stats: PeerStats = { held_back: 0, coalesced_notifications: 0 };
    const peer = new Peer(
      socket,
      { maxInFlight: 10, maxUnsentBytes: 20 },
      heldHandler().handle,
      { id: 1, subscribed: true, surfaces: null },
      stats,
    );
    socket.buffered = 100;
    const sum = (older: { n?: unknown }, newer: { n?: unknown }) => ({ n: Number(older.n) + Number(newer.n) });
    for (const n of [1, 2, 3]) peer.notify('sync.changed', { n }, sum);
    for (const n of [1, 2]) peer.notify('other', { n });
    expect(socket.sent).toEqual([]);
    socket.read();
    expect(socket.sent.map((text) => JSON.parse(text) as unknown)).toEqual([
      { jsonrpc: '2.0', method: 'sync.changed', params: { n: 6 } },
      { jsonrpc: '2.0', method: 'other', params: { n: 2 } },
    ]);
    expect(stats.coalesced_notifications).toBe(3);
  });
});
