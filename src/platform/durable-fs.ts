import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Durable file primitives shared by the relay backends and the device's file adapters.
 * It lives in relay/ because relay/ may import nothing from src/ but oplog, while src/ may
 * import from relay/.
 */

/** Prefix of every temporary file; readers of a layout ignore names that start with it. */
export const TEMP_PREFIX = '.tmp-';

/** What a durable write puts in its file: text, bytes, or a writer that streams into the file (for files too large for one string). */
export type FileData = string | Uint8Array | ((handle: FileHandle) => Promise<void>);

/**
 * Writes `data` to `path` atomically and durably: temp file in the same directory, fsync,
 * rename over the target, fsync the directory. A reader sees the old file or the new one,
 * never a torn one, and after a crash the new one survives once this resolved.
 */
export async function writeFileDurable(path: string, data: FileData, mode = 0o644): Promise<void> {
  await viaTemp(path, async (temp) => {
    await writeSynced(temp, data, mode);
    await rename(temp, path);
  });
  await fsyncDir(dirname(path));
}

/**
 * Replaces `path` atomically (temp file + rename) without waiting for the disk: a reader sees
 * the old file or the new one, and a crash may leave the old one. For files whose loss only
 * delays something, never loses it (a device's ack).
 */
export async function writeFileAtomic(path: string, data: string): Promise<void> {
  await viaTemp(path, async (temp) => {
    await writeFile(temp, data, { flag: 'wx' });
    await rename(temp, path);
  });
}

/**
 * Creates `path` with `data` only if it does not exist (link semantics: the file appears
 * complete or not at all). Resolves false when the file already existed.
 */
export async function createFileDurable(path: string, data: FileData, mode = 0o644): Promise<boolean> {
  const created = await viaTemp(path, async (temp) => {
    await writeSynced(temp, data, mode);
    try {
      await link(temp, path);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw error;
    } finally {
      await unlink(temp);
    }
  });
  if (created) await fsyncDir(dirname(path));
  return created;
}

/**
 * Runs `work` with a fresh temporary name beside `path`, and removes that file when `work`
 * fails: a write that fails (a full disk) leaves nothing behind, so retries do not pile up files.
 */
async function viaTemp<T>(path: string, work: (temp: string) => Promise<T>): Promise<T> {
  const temp = join(dirname(path), `${TEMP_PREFIX}${basename(path)}-${randomBytes(6).toString('hex')}`);
  try {
    return await work(temp);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** Creates `path` (which must not exist), writes `data` and fsyncs it. */
async function writeSynced(path: string, data: FileData, mode: number): Promise<void> {
  const handle = await open(path, 'wx', mode);
  try {
    if (typeof data === 'function') await data(handle);
    else if (typeof data === 'string') await writeText(handle, data);
    else await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `text` as UTF-8; the string reaches the file without a Buffer copy unless a write falls short. */
export async function writeText(handle: FileHandle, text: string): Promise<void> {
  const { bytesWritten } = await handle.write(text, null, 'utf8');
  if (bytesWritten === Buffer.byteLength(text, 'utf8')) return;
  const data = Buffer.from(text, 'utf8');
  for (let offset = bytesWritten; offset < data.length;) {
    const { bytesWritten: more } = await handle.write(data, offset, data.length - offset);
    offset += more;
  }
}

/**
 * Opens a file of a hostile folder for reading (proposals/threat-model.md §Files): a symbolic
 * link is not followed (ELOOP), a FIFO or device does not block the open (O_NONBLOCK), and
 * anything but a regular file is refused (ENOTREG, thrown as an errno-style error).
 */
export async function openUntrusted(path: string): Promise<FileHandle> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!(await handle.stat()).isFile()) throw Object.assign(new Error(`${path} is not a regular file`), { code: NOT_REGULAR });
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** The error code `openUntrusted` throws for a folder, FIFO, socket or device. */
export const NOT_REGULAR = 'ENOTREG';

/** Whether a read failed because the path is a symbolic link or not a regular file (damage, not absence). */
export function notRegular(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === NOT_REGULAR || code === 'ELOOP' || code === 'EISDIR' || code === 'ENOTDIR';
}

/**
 * The text of an untrusted file, or null when it holds more than `maxBytes` (no more than that
 * is read: a file's reported size is not trusted, /dev/zero reports 0).
 */
export async function readTextAtMost(path: string, maxBytes: number): Promise<string | null> {
  const handle = await openUntrusted(path);
  try {
    const bytes = await readAtMost(handle, maxBytes + 1);
    return bytes.length > maxBytes ? null : bytes.toString('utf8');
  } finally {
    await handle.close();
  }
}

/** Up to `limit` bytes from the start of an open file (its reported size is only where reading starts to size the buffer). */
export async function readAtMost(handle: FileHandle, limit: number): Promise<Buffer> {
  let buffer = Buffer.allocUnsafe(Math.min(limit, Math.max((await handle.stat()).size + 1, 64 * 1024)));
  let filled = 0;
  for (;;) {
    if (filled === buffer.length) {
      if (buffer.length === limit) break;
      // The file grew while it was read: read on, up to the limit.
      buffer = Buffer.concat([buffer, Buffer.allocUnsafe(Math.min(limit, buffer.length * 2) - buffer.length)]);
    }
    const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}

/**
 * Creates an empty file at `path`, replacing whatever stands there without following it: a
 * symbolic link planted at the name is removed, never written through (O_EXCL refuses links).
 */
export async function createEmptyFile(path: string): Promise<void> {
  await rm(path, { force: true });
  const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  await handle.close();
}

/**
 * Checks that each of `dirs` is a real folder, not a symbolic link (which would carry this
 * device's writes, and the removals of collection, outside the relay); the first that is not
 * is named in the error.
 */
export async function assertRealDirs(dirs: readonly string[], what: (path: string) => Error): Promise<void> {
  for (const dir of dirs) {
    const seen = await lstat(dir).catch(() => null);
    if (seen && !seen.isDirectory()) throw what(dir);
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Creates `dir` and its missing parents. Not `mkdir(…, { recursive: true })`: Node's asynchronous
 * one never returns when a parent exists but cannot hold the child (a path under /proc) — it
 * retries forever at full speed.
 */
export async function ensureDir(dir: string, mode = 0o755): Promise<void> {
  try {
    await mkdirOnce(dir, mode);
  } catch (error) {
    const parent = dirname(dir);
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || parent === dir) throw error;
    await ensureDir(parent, mode);
    await mkdirOnce(dir, mode);
  }
}

/**
 * Creates one directory, durably (its parent is fsync'd, so the new entry survives a crash); one
 * that already exists is fine (a link to a folder too: the user's own paths may be links; the
 * relay checks its inner folders itself, `assertRealDirs`), a file in its place is not.
 */
async function mkdirOnce(dir: string, mode: number): Promise<void> {
  try {
    await mkdir(dir, { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || !(await stat(dir).catch(() => null))?.isDirectory()) throw error;
    return;
  }
  await fsyncDir(dirname(dir));
}

/** Why a folder cannot be created or written, as a person reads it (from the error a file operation threw). */
export function whyNotWritable(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENOTDIR' || code === 'EEXIST') return 'a part of the path is a file, not a directory';
  if (code === 'EROFS') return 'the file system is read-only';
  if (code === 'ENOENT') return 'a part of the path cannot hold folders';
  return (error as Error).message;
}

/** A file's identity as far as a replacement goes (a rename brings a new inode); '' when it is gone. */
export async function fileIdentity(path: string): Promise<string> {
  const seen = await lstat(path).catch(() => null);
  return seen ? `${seen.ino}:${seen.mtimeMs}:${seen.size}` : '';
}

/** Small JSON files of a layout (relay.json, device.json, ack.json, damage.json) are far smaller; a larger one is damage and not read. */
export const MAX_JSON_FILE_BYTES = 2 ** 20;

/** A small file's parsed JSON object; undefined when the file does not exist; null when it is not an object. */
export async function readJsonObject(path: string): Promise<Record<string, unknown> | null | undefined> {
  let text: string | null;
  try {
    text = await readTextAtMost(path, MAX_JSON_FILE_BYTES);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return null;
  }
  if (text === null) return null;
  try {
    const value = JSON.parse(text) as unknown;
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Whether a file exists; any error but its absence is the caller's. */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
