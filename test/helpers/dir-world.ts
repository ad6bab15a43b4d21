import { join } from 'node:path';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { generateDeviceKey, parseDeviceKeyFile, type DeviceKey } from '../../src/crypto/device-key.js';
import { Keyring } from '../../src/crypto/keyring.js';
import { createOpMinter } from '../../src/crypto/op-minter.js';
import { FileJournal } from '../../src/journal/file-journal.js';
import { parseDeviceId, type DeviceId } from '../../src/oplog/ids.js';
import { DirCheckpointStore } from '../../src/session/checkpoint-store.js';
import { Session, type SessionLog, type SessionOptions } from '../../src/session/session.js';
import { DirectoryRelay } from '../../relay/directory/directory-relay.js';
import type { Relay } from '../../relay/port/relay.js';
import { coreCrypto } from './test-device.js';
import { PERSONAL_KEY, World } from './world.js';

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
export async function openDirSession(
  relayRoot: string,
  dataDir: string,
  name: string,
  options: Partial<SessionOptions> = {},
  log?: SessionLog,
): Promise<Session> {
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
    journalLocation: journalPath,
    openJournal: async (visit) => (await FileJournal.open(journalPath, device, visit)).journal,
    createMinter: createOpMinter,
    options: { autoCheckpointOps: 0, ackIntervalMs: 0, rosterRefreshMs: 0, ...options },
    ...(log ? { log } : {}),
  });
}

/**
 * A `World` whose devices share a real relay folder: each device's relay stamps what it writes
 * with that device's clock, as a daemon's does, and a backup is a copy of the folder, restored in
 * place under the running devices. `dispose` removes the folder and its backups.
 */
export class DirRelayWorld extends World {
  private backups = 0;

  private constructor(
    private readonly dir: string,
    private readonly horizonMs: number | undefined,
  ) {
    super(horizonMs);
  }

  static async create(horizonMs?: number): Promise<DirRelayWorld> {
    const world = new DirRelayWorld(await mkdtemp(join(tmpdir(), 'opsync-sim-')), horizonMs);
    await DirectoryRelay.open({ root: world.root, self: parseDeviceId('layout'), crypto: coreCrypto });
    return world;
  }

  get root(): string {
    return join(this.dir, 'relay');
  }

  protected override connectRelay(device: DeviceId): Promise<Relay> {
    const now = () => this.now + (this.skew.get(device) ?? 0);
    return DirectoryRelay.open({
      root: this.root,
      self: device,
      crypto: coreCrypto,
      now,
      ...(this.horizonMs === undefined ? {} : { horizonMs: this.horizonMs }),
    });
  }

  override async snapshotRelay(): Promise<() => Promise<void>> {
    const backup = join(this.dir, `backup-${this.backups++}`);
    await cp(this.root, backup, { recursive: true });
    return async () => {
      for (const entry of await readdir(this.root)) await rm(join(this.root, entry), { recursive: true, force: true });
      await cp(backup, this.root, { recursive: true });
    };
  }

  override async dispose(): Promise<void> {
    await super.dispose();
    await rm(this.dir, { recursive: true, force: true });
  }
}
