import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/**
 * A throwaway PostgreSQL server for tests and benchmarks: a fresh data directory, listening on a
 * Unix socket only (no TCP port), run as the unprivileged `postgres` user when this process is
 * root (initdb refuses root). `stop()` shuts it down and removes everything.
 */
export interface TestPostgres {
  readonly url: string;
  /** Stops the server, keeping its data (a lost connection, for clients). */
  pause(): Promise<void>;
  /** Starts it again on the same data and socket. */
  resume(): Promise<void>;
  /** Stops the server and removes everything. */
  stop(): Promise<void>;
  /** Creates an empty database on the server and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Drops a database, closing any connection still open to it. */
  dropDatabase(name: string): Promise<void>;
}

export async function startPostgres(options: { fsync?: boolean } = {}): Promise<TestPostgres> {
  const bin = await postgresBin();
  const root = await mkdtemp(join(tmpdir(), 'opsync-pg-'));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number((await run('id', ['-u', 'postgres'])).trim());
    const gid = Number((await run('id', ['-g', 'postgres'])).trim());
    await chown(root, uid, gid);
    await chmod(root, 0o700);
  }
  const as = (command: string, args: string[]) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', join(bin, command), ...args]) : run(join(bin, command), args);
  const data = join(root, 'data');
  const port = 20_000 + Math.floor(Math.random() * 40_000);
  await as('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
  const settings = [
    `-c listen_addresses=''`,
    `-k ${root}`,
    `-p ${port}`,
    `-c fsync=${options.fsync ? 'on' : 'off'}`,
    '-c max_connections=200',
  ];
  const start = () => as('pg_ctl', ['-D', data, '-o', settings.join(' '), '-l', join(root, 'log'), '-w', '-t', '60', 'start']);
  const halt = () => as('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
  await start();
  const url = `postgresql://postgres@/postgres?host=${encodeURIComponent(root)}&port=${port}`;
  return {
    url,
    pause: async () => void (await halt()),
    resume: async () => void (await start()),
    async stop() {
      await halt().catch(() => undefined);
      await rm(root, { recursive: true, force: true });
    },
    async createDatabase(name) {
      await query(url, `CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      return url.replace('/postgres?', `/${name}?`);
    },
    async dropDatabase(name) {
      await query(url, `DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
    },
  };
}

/** Runs one statement on a connection of its own. */
async function query(url: string, statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

async function postgresBin(): Promise<string> {
  const onPath = (await run('sh', ['-c', 'command -v initdb']).catch(() => '')).trim();
  if (onPath) return join(onPath, '..');
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? (await readdir(root)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const version of versions) if (existsSync(join(root, version, 'bin', 'initdb'))) return join(root, version, 'bin');
  throw new Error('PostgreSQL is not installed: initdb was found neither on PATH nor under /usr/lib/postgresql (.ci/run installs it)');
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: 120_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`${command} ${args.join(' ')} failed: ${stderr || error.message}`)) : resolve(stdout),
    );
  });
}
