import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Surface } from '../../src/oplog/surface.js';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import type { JsonObject } from '../../src/util/json.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { percentile, progress, progressDone, settle, type Row } from './bench-table.js';
import { chainEntries, writeJournal } from './workload.js';

const TURNS = 100_000;
const CHAT = 'bench-chat';
const TEXT = 'Here is what I found in the repository, with the relevant lines quoted and a suggested fix. ';

/**
 * One long agentic conversation: user asks, assistant answers or calls a tool, the tool answers;
 * every 50th call is left dangling and every 200th turn is a second device typing at once, so the
 * repair rules do real work. ~150-byte contents.
 */
function turn(i: number): [Surface, JsonObject] {
  const base = { conversation_id: CHAT, timestamp: 1_700_000_000_000 + i };
  const content = TEXT.slice(0, 60 + (i % 90));
  switch (i % 4) {
    case 0:
      return ['conversation', { ...base, role: 'user', content }];
    case 1:
      return [
        'conversation',
        {
          ...base,
          role: 'assistant',
          content,
          tool_calls: [{ id: `call_${i}`, name: 'read_file', input: { path: `src/module-${i % 97}.ts` } }],
        },
      ];
    case 2:
      return i % 200 === 2 || (i - 1) % 50 === 0
        ? ['conversation', { ...base, role: 'user', content: `(typed on the phone) ${content}` }]
        : ['conversation', { ...base, role: 'tool', tool_use_id: `call_${i - 1}`, content }];
    default:
      return ['conversation', { ...base, role: 'assistant', content }];
  }
}

export async function conversationBench(): Promise<Row[]> {
  const root = await mkdtemp(join(tmpdir(), 'opsync-bench-conversation-'));
  const dataDir = join(root, 'holder');
  try {
    await writeJournal(dataDir, 'bench-holder', chainEntries('bench-peer', TURNS, turn), (written) =>
      progress(`conversation: writing a ${TURNS.toLocaleString('en-US')}-turn conversation (${written.toLocaleString('en-US')})`),
    );
    progress('conversation: starting a daemon that holds it');
    const daemon = await DaemonProcess.start(dataDir, join(root, 'relay'), ['--device-id', 'bench-holder']);
    try {
      const client = await daemon.connect();
      const rows = [...(await resume(client)), ...(await transcriptPage(client))];
      await client.close();
      progressDone();
      return rows;
    } finally {
      await daemon.stop();
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function timed<T>(work: () => Promise<T>): Promise<[number, T]> {
  const start = performance.now();
  const result = await work();
  return [performance.now() - start, result];
}

async function resume(client: RpcClient): Promise<Row[]> {
  progress('conversation: sync.resume of 100,000 turns');
  const rows: Row[] = [];
  for (const format of ['anthropic', 'openai'] as const) {
    const samples: number[] = [];
    let size = 0;
    let messages = 0;
    for (let i = 0; i < 12; i++) {
      // Each sample starts from a clean client heap, as an app resuming once does.
      settle();
      const [ms, result] = await timed(() =>
        client.call<{ messages: unknown[]; turns: number }>('sync.resume', { conversation_id: CHAT, format }),
      );
      if (i >= 2) samples.push(ms);
      if (i === 0) [messages, size] = [result.messages.length, JSON.stringify(result).length];
    }
    samples.sort((x, y) => x - y);
    rows.push({
      name: `conversation.resume_100k_${format}`,
      value: round(percentile(samples, 50)),
      unit: 'ms',
      target: '<= 200',
      note: `p50 of 10 calls through the WebSocket, max ${round(samples.at(-1)!)} ms; ${messages.toLocaleString('en-US')} messages, ${(size / 2 ** 20).toFixed(1)} MiB of JSON`,
    });
  }
  return rows;
}

async function transcriptPage(client: RpcClient): Promise<Row[]> {
  progress('conversation: sync.transcript pages from the middle');
  let cursor: string | null = null;
  for (let seen = 0; seen < TURNS / 2; seen += 10_000) {
    const page: { next: string | null } = await client.call('sync.transcript', {
      conversation_id: CHAT,
      limit: 10_000,
      ...(cursor ? { after: cursor } : {}),
    });
    cursor = page.next;
  }
  const samples: number[] = [];
  for (let i = 0; i < 220; i++) {
    const [ms, page] = await timed(() =>
      client.call<{ turns: unknown[] }>('sync.transcript', { conversation_id: CHAT, limit: 100, after: cursor }),
    );
    if (page.turns.length !== 100) throw new Error('a page from the middle came back short');
    if (i >= 20) samples.push(ms);
  }
  samples.sort((x, y) => x - y);
  return [
    {
      name: 'conversation.transcript_page_100',
      value: round(percentile(samples, 50)),
      unit: 'ms',
      target: '<= 10',
      note: `p50 of 200 pages of 100 turns after turn 50,000, through the WebSocket; p99 ${round(percentile(samples, 99))} ms`,
    },
  ];
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
