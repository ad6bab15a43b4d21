/**
 * Child: opens a journal, prints whether it got it ({"ok":true} or the refusal's code), and
 * holds it until its stdin closes.
 */
import { FileJournal } from '../../src/journal/file-journal.js';
import { isOpsyncError } from '../../src/util/opsync-error.js';
import { parseDeviceId } from '../../src/oplog/ids.js';

const [path, device] = process.argv.slice(2);
const stdinClosed = new Promise((resolve) => process.stdin.on('end', resolve).resume());
try {
  const { journal } = await FileJournal.open(path!, parseDeviceId(device), () => {});
  process.stdout.write(JSON.stringify({ ok: true }) + '\n');
  await stdinClosed;
  await journal.close();
} catch (error) {
  if (!isOpsyncError(error)) throw error;
  process.stdout.write(JSON.stringify({ ok: false, code: error.code }) + '\n');
}
