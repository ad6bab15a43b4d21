/**
 * Benchmark child: the ceiling for the RPC figures — a bare `ws` server answering a JSON-RPC
 * echo with `json-rpc-2.0`, in its own process like the daemon. (Test code; the product keeps
 * `ws` in one module.) Prints its URL, then serves until killed.
 */
import { JSONRPCServer } from 'json-rpc-2.0';
import { WebSocketServer } from 'ws';

const server = new JSONRPCServer();
server.addMethod('echo', (params: unknown) => params);
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
wss.on('connection', (ws) => {
  ws.on('message', (data: Buffer) => {
    void server.receiveJSON(data.toString('utf8')).then((answer) => {
      if (answer) ws.send(JSON.stringify(answer));
    });
  });
});
wss.on('listening', () => {
  const address = wss.address();
  process.stdout.write(`ws://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}\n`);
});
