/**
 * `npm run bench -- [section ...] [--json]`: runs the named sections (default: all) and prints
 * one table, or JSON lines with --json. Sections: core, relay, daemon, lease, conversation.
 */
import { renderJson, renderTable, type Row } from './bench-table.js';
import { conversationBench } from './conversation.js';
import { coreBench } from './core.js';
import { daemonBench } from './daemon.js';
import { leaseBench } from './lease.js';
import { relayBench } from './relay.js';

const SECTIONS: Record<string, () => Promise<Row[]>> = {
  core: coreBench,
  relay: relayBench,
  daemon: daemonBench,
  lease: leaseBench,
  conversation: conversationBench,
};

const args = process.argv.slice(2);
const json = args.includes('--json');
const wanted = args.filter((a) => !a.startsWith('--'));
const unknown = wanted.filter((name) => !SECTIONS[name]);
if (unknown.length > 0) {
  process.stderr.write(`unknown bench section(s): ${unknown.join(', ')}; known: ${Object.keys(SECTIONS).join(', ')}\n`);
  process.exit(2);
}
const rows: Row[] = [];
for (const name of wanted.length > 0 ? wanted : Object.keys(SECTIONS)) rows.push(...(await SECTIONS[name]!()));
process.stdout.write((json ? renderJson(rows) : renderTable(rows)) + '\n');
