/**
 * Test child: one device as a separate process, live-syncing through a relay directory.
 * Commands arrive as JSON lines on stdin ({id, cmd, ...}); answers and change events leave as
 * JSON lines on stdout. Usage: live-session <relay-dir> <data-dir> <device-id>
 */
import { createInterface } from 'node:readline';
import { isOpsyncError } from '../../src/util/opsync-error.js';
import { openDirSession } from '../helpers/dir-world.js';

const [relay, dataDir, device] = process.argv.slice(2);
const session = await openDirSession(relay!, dataDir!, device!, { periodicPumpMs: 3_600_000 });
const send = (message: object) => process.stdout.write(JSON.stringify(message) + '\n');
session.onChange((event) => send({ event: 'changed', state_hash: event.state_hash, rebased: event.rebased }));
await session.startLive();
send({ event: 'ready', base_checkpoint: session.status().base_checkpoint, state_hash: session.state.stateHash() });

const commands: Record<string, (args: Record<string, unknown>) => Promise<unknown>> = {
  append: (args) => session.append({ surface: args.surface as never, payload: args.payload as never, scope: 'personal' }),
  hash: () => Promise.resolve({ state_hash: session.state.stateHash(), records: session.state.recordCount }),
  status: () => Promise.resolve(session.status()),
  checkpoint: () => session.checkpoint(),
  compact: () => session.compact(),
  close: async () => {
    await session.close();
    setImmediate(() => process.exit(0));
    return { closed: true };
  },
};

createInterface({ input: process.stdin }).on('line', (line) => {
  const { id, cmd, ...args } = JSON.parse(line) as { id: number; cmd: string } & Record<string, unknown>;
  commands[cmd]!(args).then(
    (result) => send({ id, result }),
    (error: unknown) => send({ id, error: isOpsyncError(error) ? { code: error.code, message: error.message } : String(error) }),
  );
});
