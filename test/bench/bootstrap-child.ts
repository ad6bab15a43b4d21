/**
 * Benchmark child: a new device that bootstraps from the relay (checkpoint + tail), reports the
 * time and its peak RSS, lets its one-time background work finish (the local copy of the
 * checkpoint), then answers "pump" commands on stdin with each pump's duration.
 */
import { createInterface } from 'node:readline';
import { openDirSession } from '../helpers/dir-world.js';

const [relay, dataDir] = process.argv.slice(2);
const start = performance.now();
const session = await openDirSession(relay!, dataDir!, 'bench-newcomer');
const opened = performance.now() - start;
const report = await session.pump();
const ms = performance.now() - start;
const send = (message: object) => process.stdout.write(JSON.stringify(message) + '\n');
send({
  event: 'bootstrapped',
  ms,
  openMs: opened,
  records: session.state.recordCount,
  folded: report.folded,
  base: session.status().base_checkpoint,
  maxRssMiB: process.resourceUsage().maxRSS / 1024,
});
await session.settled();
send({ event: 'settled' });
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'close') {
    void session.close().then(() => process.exit(0));
    return;
  }
  const t0 = performance.now();
  void session.pump().then((pumped) => send({ event: 'pumped', ms: performance.now() - t0, folded: pumped.folded }));
});
