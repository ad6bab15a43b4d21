import type { Socket } from 'node:net';
import type WebSocket from 'ws';

/** What both WebSocket ends (rpc-server.ts, rpc-client.ts) do alike with frames. */

/**
 * Corks `socket` until the current turn of the event loop ends, so that the frames written in
 * one turn (the answers of one group commit, a burst of pipelined requests) leave in one write.
 */
export function corked(socket: Socket): () => void {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return () => {
    if (corked) return;
    corked = true;
    socket.cork();
    process.nextTick(uncork);
  };
}

/** A received frame's text, whatever form `ws` gives it in. */
export function rawText(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
