import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { generateDeviceKey, parseDeviceKeyFile, type DeviceKey } from '../../src/crypto/device-key.js';
import { Keyring } from '../../src/crypto/keyring.js';
import { createOpMinter } from '../../src/crypto/op-minter.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import { parseDeviceId } from '../../src/oplog/ids.js';
import { DirCheckpointStore } from '../../src/session/checkpoint-store.js';
import { Session, type SessionLog, type SessionOptions } from '../../src/session/session.js';
import { DirectoryRelay } from '../../relay/directory-relay.js';
import { coreCrypto } from './test-device.js';
import { PERSONAL_KEY } from './world.js';

/** The device key kept in `dataDir`, created on first use (as a daemon's data directory keeps it). */
async function deviceKeyIn(dataDir: string): Promise<DeviceKey> {
  const path = join(dataDir, 'device-key.json');
  try {
    return parseDeviceKeyFile(await readFile(path, 'utf8'), path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    const key = generateDeviceKey();
    await writeFile(path, key.toFileText(), { mode: 0o600 });
    return key;
  }
}

/** Opens an in-process session on a real file journal and a directory relay. */
export async function openDirSession(relayRoot: string, dataDir: string, name: string, options: Partial<SessionOptions> = {}, log?: SessionLog): Promise<Session> {
  const device = parseDeviceId(name);
  const relay = await DirectoryRelay.open({ root: relayRoot, self: device, crypto: coreCrypto });
  const journalPath = join(dataDir, 'journal.log');
  return Session.open({
    device,
    deviceKey: await deviceKeyIn(dataDir),
    keyring: new Keyring([PERSONAL_KEY]),
    crypto: coreCrypto,
    relay,
    checkpoints: new DirCheckpointStore(join(dataDir, 'checkpoints')),
    now: Date.now,
    randomBytes: (n) => randomBytes(n),
    journalLocation: journalPath,
    openJournal: async (visit) => (await FileJournal.open(journalPath, device, visit)).journal,
    createMinter: createOpMinter,
    options: { autoCheckpointOps: 0, ackIntervalMs: 0, rosterRefreshMs: 0, ...options },
    ...(log ? { log } : {}),
  });
}
