import { join } from 'node:path';
import { FileJournal } from '../../src/journal/file-journal.js';
import { MemoryJournalStore } from '../../src/journal/memory-journal.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { runJournalContract } from './journal-contract.js';

const tempDir = useTempDirs();
const device = parseDeviceId('laptop');

runJournalContract('memory', () => {
  const store = new MemoryJournalStore();
  return Promise.resolve({ open: (visit = () => {}) => store.open('journal', visit) });
});

runJournalContract('file', async () => {
  const path = join(await tempDir(), 'journal.log');
  return { open: async (visit = () => {}) => (await FileJournal.open(path, device, visit)).journal };
});
