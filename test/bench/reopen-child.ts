/** Benchmark child: reopens (loads and verifies) a journal and reports time, ops and peak RSS. */
import { FileJournal } from '../../src/journal/file-journal.js';
import { JournalVerifier } from '../../src/journal/journal-verifier.js';
import { parseDeviceId } from '../../src/oplog/ids.js';

const [path, device] = process.argv.slice(2);
const start = performance.now();
const verifier = new JournalVerifier(path!);
const { journal } = await FileJournal.open(path!, parseDeviceId(device), (entry, line) => verifier.check(entry, line));
const ms = performance.now() - start;
await journal.close();
process.stdout.write(JSON.stringify({ ms, ops: verifier.ops, maxRssMiB: process.resourceUsage().maxRSS / 1024 }) + '\n');
