/**
 * Crash-test child: opens the journal given on the command line, continues its chain, and
 * appends forever from several concurrent appenders, printing "<seq> <op_id>" for each op only
 * after its append resolved (stdout to a pipe is synchronous on Linux, so a printed op was
 * reported before any kill). The parent kills it with SIGKILL.
 */
import { FileJournal } from '../../src/journal/file-journal.js';
import { JournalVerifier } from '../../src/journal/journal-verifier.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import { TestDevice } from '../helpers/test-device.js';

const [path, id] = process.argv.slice(2);
const device = new TestDevice(id!, 7, Date.now);
const verifier = new JournalVerifier(path!);
const { journal } = await FileJournal.open(path!, parseDeviceId(id), (entry, line) => verifier.check(entry, line));
const head = verifier.heads.get(device.id) ?? null;
device.head = head;
if (head) device.clock.observe(head.hlc);
process.stdout.write('ready\n');

const APPENDERS = 8;
async function appender(): Promise<never> {
  for (;;) {
    const op = device.op('knowledge', { id: `k-${Math.random()}`, text: 'x'.repeat(100) });
    await journal.append([{ kind: 'op', op, plain: op.payload }]);
    process.stdout.write(`${op.seq} ${op.op_id}\n`);
  }
}
await Promise.all(Array.from({ length: APPENDERS }, appender));
