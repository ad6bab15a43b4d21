import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseCheckpointHeader, restoreCheckpoint, type CheckpointHeader } from '../../src/checkpoint/checkpoint.js';
import { headerProblem } from '../../src/session/checkpoint-auth.js';
import { openCheckpoint } from '../../src/session/checkpoint-seal.js';
import { iterate } from '../../src/session/checkpoint-store.js';
import type { CheckpointHeaderJson } from '../../relay/port/relay.js';
import { openPayload } from '../../src/crypto/envelope.js';
import { Keyring } from '../../src/crypto/keyring.js';
import { scopeKeyFromBytes } from '../../src/crypto/scope-key.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import type { JournalEntry } from '../../src/journal/journal.js';
import { JournalVerifier } from '../../src/journal/journal-verifier.js';
import { canonicalize } from '../../src/oplog/canonical.js';
import { verifyChain } from '../../src/oplog/chain.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import { opIdOf, parseOpRecord } from '../../src/oplog/op-record.js';
import { useTempDirs } from '../helpers/temp-dir.js';
import { coreCrypto } from '../helpers/test-device.js';

/** Bytes written when each format version was frozen; today's code must keep reading them. */
const fixture = (name: string) => join(process.cwd(), 'test', 'fixtures', name);
const json = async (name: string) => JSON.parse(await readFile(fixture(name), 'utf8')) as Record<string, unknown>;
const tempDir = useTempDirs();

describe('golden fixtures (format versions 1 and 2)', () => {
  it('op record: same canonical body, same op id, signature verifies', async () => {
    const f = await json('op-record-v1.json');
    const op = parseOpRecord(f.op);
    const { op_id: _id, sig: _sig, ...body } = op;
    expect(canonicalize(body)).toBe(f.canonical_body);
    expect(opIdOf(op, coreCrypto)).toBe(op.op_id);
    expect(verifyChain({ device: op.device_id, anchor: null, ops: [op], publicKey: f.public_key as string }, coreCrypto).error).toBeNull();
  });

  it('envelope: opens to the recorded plaintext with the recorded key', async () => {
    const f = await json('envelope-v1.json');
    const keyring = new Keyring([scopeKeyFromBytes('personal', Buffer.from(f.key as string, 'base64url'))]);
    expect(keyring.forScope('personal')?.kid).toBe(f.kid);
    const opened = openPayload(keyring, f.envelope, f.binding as never);
    expect(opened).toEqual({ ok: true, payload: f.plaintext });
  });

  it('checkpoint: the header verifies and the chunks restore to the recorded state hash', async () => {
    const f = await json('checkpoint-v1.json');
    const header = parseCheckpointHeader(f.header, coreCrypto);
    const state = restoreCheckpoint({ header, chunks: f.chunks as string[] }, coreCrypto);
    expect(state.stateHash()).toBe(header.state_hash);
    expect(state.run('agent-1', 'run-1')?.status).toBe('committed');
    expect(state.record('registry:tools', 'grep')?.payload.deleted).toBe(true);
  });

  it('checkpoint v2: the sealed file opens, authenticates under its publisher key and restores to its state hash', async () => {
    const f = await json('checkpoint-v2.json');
    const keyring = new Keyring([scopeKeyFromBytes('personal', Buffer.from(f.key as string, 'base64url'))]);
    const [header, ...chunks] = (await readFile(fixture('checkpoint-v2.jsonl'), 'utf8')).trim().split('\n');
    const publicKeyOf = (device: string) => (device === f.publisher ? (f.public_key as string) : null);
    const trust = (parsed: CheckpointHeader) => headerProblem(parsed, keyring, publicKeyOf, coreCrypto);
    const opened = await openCheckpoint(
      { header: JSON.parse(header!) as CheckpointHeaderJson, chunks: iterate(chunks) },
      keyring,
      coreCrypto,
      trust,
    );
    expect(opened.header.v).toBe(2);
    expect(opened.state.stateHash()).toBe(opened.header.state_hash);
    expect(opened.state.run('agent-1', 'run-1')?.status).toBe('committed');
    const stranger = (device: string) => (device === f.publisher ? 'A'.repeat(43) : null);
    expect(headerProblem(opened.header, keyring, stranger, coreCrypto)).toMatch(/signature does not verify/);
  });

  it('journal: opens, verifies its chains from the base marker and yields every entry', async () => {
    const path = join(await tempDir(), 'journal.log');
    await cp(fixture('journal-v1.log'), path);
    const entries: JournalEntry[] = [];
    const verifier = new JournalVerifier(path);
    const { journal, recovery } = await FileJournal.open(path, parseDeviceId('fixture-laptop'), (entry, line) => {
      verifier.check(entry, line);
      entries.push(entry);
    });
    await journal.close();
    expect(recovery.cutLines).toBe(0);
    expect(entries.map((e) => e.kind)).toEqual(['base', 'op', 'op', 'op']);
    expect(entries.filter((e) => e.kind === 'op' && e.plain === null)).toHaveLength(1);
    expect(verifier.heads.get(parseDeviceId('fixture-laptop'))?.seq).toBe(4);
    expect(verifier.heads.get(parseDeviceId('fixture-phone'))?.seq).toBe(3);
  });
});
