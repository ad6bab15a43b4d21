/** Child: opens a journal (compiled code, so large files use the digest worker) and prints the outcome as JSON. */
import { FileJournal } from '../../src/journal/file-journal.js';
import { JournalVerifier } from '../../src/journal/journal-verifier.js';
import { isOpsyncError } from '../../src/util/opsync-error.js';
import { parseDeviceId } from '../../src/oplog/ids.js';

const [path, device] = process.argv.slice(2);
const verifier = new JournalVerifier(path!);
try {
  const { journal } = await FileJournal.open(path!, parseDeviceId(device), (entry, line) => verifier.check(entry, line));
  await journal.close();
  process.stdout.write(JSON.stringify({ ok: true, ops: verifier.ops }) + '\n');
} catch (error) {
  if (!isOpsyncError(error)) throw error;
  process.stdout.write(JSON.stringify({ ok: false, code: error.code, message: error.message }) + '\n');
}
