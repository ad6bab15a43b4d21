import { randomBytes } from 'node:crypto';
import type { ProgressStep } from '../util/progress.js';
import { access, chmod, constants, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { v4 as uuidv4 } from 'uuid';
import { generateDeviceKey, parseDeviceKeyFile, type DeviceKey } from '../crypto/device-key.js';
import { Keyring } from '../crypto/keyring.js';
import { encodeKeyFile, parseKeyFile, scopeKeyFromBytes, scopeKeyFromPassphrase, type ScopeKey } from '../crypto/scope-key.js';
import { isDeviceId, type DeviceId } from '../oplog/ids.js';
import { OpsyncError } from '../util/opsync-error.js';
import { scopeKey, type Scope } from '../oplog/scope.js';
import { createFileDurable, ensureDir, readJsonObject, whyNotWritable, writeFileAtomic, writeFileDurable } from '../platform/durable-fs.js';
import { parseIdentity, type ProcessIdentity } from '../journal/process-identity.js';

/**
 * The daemon's data directory (proposals/daemon.md §Data directory):
 *
 *     device.json       {"opsync_device_id":1,"device_id":…}   minted once
 *     device-key.json   Ed25519 key pair                       0600
 *     token             bearer token for the RPC server        0600
 *     keys/<scope>.json scope keys                             0600
 *     journal.log       the journal (and journal.log.lock)
 *     checkpoints/      copies of checkpoints the journal is based on
 *     daemon.json       {url, pid, started, device_id, started_at_ms}   while a daemon runs
 */
/** A generated token has 43 characters (32 random bytes, base64url). */
const MIN_TOKEN_LENGTH = 32;

/** Told of a secret file that other users could read, and that was made 0600. */
export type LooseSecret = (path: string, mode: number) => void;

export class DataDir {
  /** `loose`: null for a reader that must not change the directory (the CLI). */
  private constructor(
    readonly root: string,
    private readonly loose: LooseSecret | null,
  ) {}

  /**
   * Creates the directory (0700) if needed and checks that it is writable. A secret file (the
   * device key, the token, a scope key) that other users could read — copied or restored with
   * a loose umask — is made 0600 as it is read, and `loose` is told.
   */
  static async prepare(root: string, loose: LooseSecret = () => {}): Promise<DataDir> {
    try {
      await ensureDir(join(root, 'keys'), 0o700);
      await access(root, constants.W_OK);
    } catch (error) {
      throw new OpsyncError('config_invalid', `The data directory ${root} cannot be created or written: ${whyNotWritable(error)}.`, {
        data_dir: root,
      });
    }
    return new DataDir(root, loose);
  }

  /** An existing data directory, for the CLI (nothing is created or changed). */
  static existing(root: string): DataDir {
    return new DataDir(root, null);
  }

  get journalPath(): string {
    return join(this.root, 'journal.log');
  }

  get checkpointsDir(): string {
    return join(this.root, 'checkpoints');
  }

  get daemonInfoPath(): string {
    return join(this.root, 'daemon.json');
  }

  /** The persisted device id; minted on first start. A different `requested` id is refused. */
  async deviceId(requested: DeviceId | null): Promise<DeviceId> {
    const path = join(this.root, 'device.json');
    await createFileDurable(path, JSON.stringify({ opsync_device_id: 1, device_id: requested ?? uuidv4() }) + '\n');
    let stored: unknown;
    try {
      stored = (JSON.parse(await readFile(path, 'utf8')) as { device_id?: unknown } | null)?.device_id;
    } catch {
      stored = undefined;
    }
    if (!isDeviceId(stored)) {
      throw new OpsyncError(
        'config_invalid',
        `${path} is damaged: it does not hold this data directory's device id. Restore it ({"opsync_device_id":1,"device_id":"<id>"}; the id also stands in the first line of journal.log) or use another --data-dir.`,
        { path },
      );
    }
    if (requested !== null && requested !== stored) {
      throw new OpsyncError(
        'config_invalid',
        `This data directory belongs to device ${stored}; --device-id ${requested} would make it another device. Use another --data-dir.`,
        {
          device_id: stored,
        },
      );
    }
    return stored;
  }

  async deviceKey(): Promise<DeviceKey> {
    const path = join(this.root, 'device-key.json');
    await createFileDurable(path, generateDeviceKey().toFileText(), 0o600);
    return parseDeviceKeyFile(await this.readSecret(path), path);
  }

  /** The bearer token; one too short to protect the daemon (an emptied file) is refused. */
  async token(): Promise<string> {
    const path = join(this.root, 'token');
    await createFileDurable(path, randomBytes(32).toString('base64url') + '\n', 0o600);
    const token = (await this.readSecret(path)).trim();
    if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
      throw new OpsyncError(
        'config_invalid',
        `The token in ${path} is unusable (${token.length} characters; it needs at least ${MIN_TOKEN_LENGTH}, without spaces): anyone could guess it. Delete the file and a new token is made at the next start.`,
        { path },
      );
    }
    return token;
  }

  /**
   * The scope keys: every key file in keys/, plus the personal key — derived from the
   * passphrase when one is given (every device with the same passphrase gets the same key),
   * otherwise created at random on first start.
   */
  async keyring(passphrase: string | null): Promise<Keyring> {
    const keyring = new Keyring(await this.storedKeys());
    if (passphrase !== null) keyring.add(await scopeKeyFromPassphrase('personal', passphrase));
    else if (!keyring.forScope('personal')) {
      const key = scopeKeyFromBytes('personal', randomBytes(32));
      await this.saveKey(key);
      keyring.add(key);
    }
    return keyring;
  }

  async storedKeys(): Promise<ScopeKey[]> {
    const dir = join(this.root, 'keys');
    const names = (await readdir(dir).catch(() => [])).filter((name) => name.endsWith('.json'));
    return Promise.all(names.map(async (name) => parseKeyFile(await this.readSecret(join(dir, name)), join(dir, name))));
  }

  /** A secret file's text; one that other users could read is made 0600 first (see `prepare`). */
  private async readSecret(path: string): Promise<string> {
    const mode = this.loose ? (await stat(path)).mode & 0o777 : 0;
    if (mode & 0o077) {
      try {
        await chmod(path, 0o600);
      } catch {
        throw new OpsyncError(
          'config_invalid',
          `${path} can be read by other users (mode ${mode.toString(8)}) and this user cannot change that; it holds a secret. Run: chmod 600 ${path}`,
          { path },
        );
      }
      this.loose!(path, mode);
    }
    return readFile(path, 'utf8');
  }

  async saveKey(key: ScopeKey): Promise<void> {
    await writeFileDurable(this.keyPath(key.scope), encodeKeyFile(key), 0o600);
  }

  keyPath(scope: Scope): string {
    return join(this.root, 'keys', `${scopeKey(scope).replace(':', '-')}.json`);
  }

  async writeDaemonInfo(info: DaemonInfo): Promise<void> {
    await writeFileDurable(this.daemonInfoPath, JSON.stringify(info) + '\n');
  }

  /** What the running daemon wrote; null when there is none. A damaged file is refused, saying so. */
  async readDaemonInfo(): Promise<DaemonInfo | null> {
    const parsed = await readJsonObject(this.daemonInfoPath);
    if (parsed === undefined) return null;
    const identity = parseIdentity(parsed);
    if (
      !parsed ||
      !identity ||
      typeof parsed.url !== 'string' ||
      !isDeviceId(parsed.device_id) ||
      typeof parsed.started_at_ms !== 'number'
    ) {
      throw new OpsyncError(
        'config_invalid',
        `${this.daemonInfoPath} is damaged (a daemon writes it when it starts); remove it if no daemon runs.`,
        {
          path: this.daemonInfoPath,
        },
      );
    }
    const metrics = typeof parsed.metrics_url === 'string' ? { metrics_url: parsed.metrics_url } : {};
    return { ...identity, url: parsed.url, device_id: parsed.device_id, started_at_ms: parsed.started_at_ms, ...metrics };
  }

  async removeDaemonInfo(): Promise<void> {
    await rm(this.daemonInfoPath, { force: true });
  }

  /** `start.json`: how the newest start of a daemon on this directory is going (proposals/daemon.md §Start). */
  get startPath(): string {
    return join(this.root, 'start.json');
  }

  /** Records the newest start: under way (by this process), or failed with its error; removed once the daemon is ready. */
  async writeStart(start: StartRecord): Promise<void> {
    await writeFileAtomic(this.startPath, JSON.stringify(start) + '\n');
  }

  /** The newest start's record, when one is under way or failed; null when there is none, or it is not one. */
  async readStart(): Promise<StartRecord | null> {
    const parsed = await readJsonObject(this.startPath);
    const identity = parsed ? parseIdentity(parsed) : null;
    if (!parsed || !identity) return null;
    if (parsed.state === 'starting') return { ...identity, state: 'starting', ...progressOf(parsed.progress) };
    if (parsed.state !== 'failed' || typeof parsed.message !== 'string' || typeof parsed.code !== 'string') return null;
    return { ...identity, state: 'failed', code: parsed.code.slice(0, 64), message: parsed.message.slice(0, 4096) };
  }

  async removeStart(): Promise<void> {
    await rm(this.startPath, { force: true });
  }
}

/** How the newest start of a daemon went: under way, or failed with the sentence it ended in. */
export type StartRecord = ProcessIdentity &
  (
    | { readonly state: 'starting'; readonly progress?: StartProgressRecord }
    | { readonly state: 'failed'; readonly code: string; readonly message: string }
  );

/** How far a step of the start has come (proposals/daemon.md §Progress). */
export interface StartProgressRecord {
  readonly step: ProgressStep;
  readonly done: number;
  readonly total: number;
}

const STEPS: ReadonlySet<string> = new Set<ProgressStep>(['journal', 'checkpoint', 'compaction']);

/** start.json's progress, when it is one (the file is read as untrusted input). */
function progressOf(value: unknown): { progress?: StartProgressRecord } {
  if (typeof value !== 'object' || value === null) return {};
  const { step, done, total } = value as Record<string, unknown>;
  if (typeof step !== 'string' || !STEPS.has(step) || !Number.isSafeInteger(done) || !Number.isSafeInteger(total)) return {};
  return { progress: { step: step as ProgressStep, done: done as number, total: total as number } };
}

export interface DaemonInfo extends ProcessIdentity {
  readonly url: string;
  readonly device_id: DeviceId;
  readonly started_at_ms: number;
  /** Where `--metrics-listen` serves /metrics without the token, when it was given. */
  readonly metrics_url?: string;
}
