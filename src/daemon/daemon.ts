import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { createNodeCoreCrypto } from '../crypto/node-core-crypto.js';
import { createOpMinter } from '../crypto/op-minter.js';
import { encodeKeyFile, parseKeyFile } from '../crypto/scope-key.js';
import { FileJournal } from '../journal/file-journal.js';
import { ownIdentity } from '../journal/process-identity.js';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
import { scopeKey, type Scope } from '../oplog/scope.js';
import { conversationMethods } from '../rpc/conversation-methods.js';
import { discoverMethod } from '../rpc/discover.js';
import { leaseMethods } from '../rpc/lease-methods.js';
import type { LeaseCoordinator } from '../lease/coordinator.js';
import { dirCoordinator } from '../lease/dir-coordinator.js';
import { memoryCoordinator } from '../lease/memory-coordinator.js';
import { pgCoordinator } from '../lease/pg-coordinator.js';
import { RpcEndpoint } from '../rpc/rpc-endpoint.js';
import type { MethodSpec } from '../rpc/method.js';
import { syncMethods, type SyncServices } from '../rpc/sync-methods.js';
import type { Keyring } from '../crypto/keyring.js';
import { startRpcServer, type RpcServer } from '../rpc/rpc-server.js';
import { DirCheckpointStore } from '../session/checkpoint-store.js';
import { Session, type SessionDeps } from '../session/session.js';
import { DirectoryRelay } from '../../relay/directory/directory-relay.js';
import { ensureDir } from '../platform/durable-fs.js';
import { PostgresRelay } from '../../relay/postgres/postgres-relay.js';
import type { Relay } from '../../relay/port/relay.js';
import type { DaemonConfig } from './config.js';
import { LIMITS } from '../util/limits.js';
import { Closers } from './closers.js';
import { DataDir } from './data-dir.js';
import { leaseDirFor } from './lease-place.js';
import { daemonLogger } from './daemon-log.js';
import { daemonRoutes } from './daemon-routes.js';
import { RateHistory } from './rate-history.js';
import { RecentLog } from './recent-log.js';
import { StartProgress } from './start-progress.js';
import type { Progress } from '../util/progress.js';
import { LeaseBook } from '../lease/lease-book.js';
import { PageAccess } from '../rpc/page-access.js';
import { startPlainHttp } from '../rpc/http-routes.js';
import { changedFor, mergeChanged } from '../rpc/change-feed.js';

export const VERSION = '0.1.0';

/**
 * The composition root (proposals/daemon.md §Composition): the only place that builds the real adapters and wires them
 * together. Everything it starts, `close()` stops (`Closers`): the RPC server and its sockets,
 * the session (journal flushed, watcher closed), the leases and the relay; a start that fails
 * part-way closes what it had opened.
 */
export class Daemon {
  private constructor(
    readonly url: string,
    readonly deviceId: string,
    private readonly closers: Closers,
    private readonly log: Logger,
  ) {}

  /**
   * Starts a daemon on the data directory `config` names. How the start goes is recorded in
   * `start.json` (under way, or failed with its sentence) until the daemon is ready and writes
   * `daemon.json`, so that `opsync wait` fails at once, with the start's own error, when it died.
   */
  static async start(config: DaemonConfig, log?: Logger): Promise<Daemon> {
    const recent = new RecentLog();
    const logger = log ?? daemonLogger({ level: config.logLevel, format: config.logFormat }, recent);
    const dataDir = await DataDir.prepare(config.dataDir, (path, mode) =>
      logger.warn(
        { path, was: mode.toString(8) },
        'a secret file could be read by other users; it is now readable only by its owner (0600)',
      ),
    );
    const me = await ownIdentity();
    await dataDir.writeStart({ ...me, state: 'starting' });
    const progress = new StartProgress(logger.child({ component: 'progress' }), (step, done, total) =>
      dataDir.writeStart({ ...me, state: 'starting', progress: { step, done, total } }),
    );
    try {
      const daemon = await Daemon.startIn(dataDir, config, { log: logger, recent, progress: progress.report });
      await progress.started();
      await dataDir.removeStart();
      return daemon;
    } catch (error) {
      await progress.started();
      const code = isOpsyncError(error) ? error.code : 'internal';
      const message = isOpsyncError(error) ? error.message : `The start failed unexpectedly: ${(error as Error).message}`;
      await dataDir.writeStart({ ...me, state: 'failed', code, message }).catch(() => undefined);
      throw error;
    }
  }

  private static async startIn(
    dataDir: DataDir,
    config: DaemonConfig,
    { log, recent, progress }: { log: Logger; recent: RecentLog; progress: Progress },
  ): Promise<Daemon> {
    const device = await dataDir.deviceId(config.deviceId);
    const deviceKey = await dataDir.deviceKey();
    const token = await dataDir.token();
    const keyring = await dataDir.keyring(await passphrase(config));
    const crypto = createNodeCoreCrypto();
    const closers = new Closers();
    try {
      const relay = closers.add(await openRelay(config, device, crypto), (opened) => opened.close());
      const session = closers.add(
        await openSession(config, dataDir, { device, deviceKey, keyring, crypto, relay, log, progress }),
        (opened) => opened.close(),
      );
      const leases = closers.add(new LeaseBook(await openLeases(config)), (opened) => opened.close());
      const startedAt = Date.now();
      const served = await serve({ session, relay, leases, dataDir, keyring, startedAt }, config, token, { log, recent }, closers);
      const live = served.server;
      session.onChange((event) => live.notify('sync.changed', (connection) => changedFor(event, connection), mergeChanged));
      await session.startLive();
      closers.add(dataDir, (opened) => opened.removeDaemonInfo());
      const where = { url: live.url, ...served.metrics };
      await dataDir.writeDaemonInfo({ ...(await ownIdentity()), ...where, device_id: device, started_at_ms: startedAt });
      log.info({ ...where, device_id: device, data_dir: config.dataDir, relay: relay.location }, `opsync listening on ${live.url}`);
      return new Daemon(live.url, device, closers, log);
    } catch (error) {
      // What the start opened is closed again, and the start's own failure is what it says.
      await closers.closeAll().catch(() => undefined);
      throw error;
    }
  }

  /** Stops what the start opened, newest first: daemon.json, the RPC server, leases, the session (journal flushed), the relay. */
  async close(): Promise<void> {
    await this.closers.closeAll();
    this.log.info({}, 'opsync stopped');
  }
}

/**
 * Serves what the start opened: the JSON-RPC methods over WebSocket, and beside them the HTTP
 * routes (probes, metrics, the status page), on --listen and, without the token, on
 * --metrics-listen (proposals/daemon.md §HTTP).
 */
async function serve(
  opened: { session: Session; relay: Relay; leases: LeaseBook; dataDir: DataDir; keyring: Keyring; startedAt: number },
  config: DaemonConfig,
  token: string,
  { log, recent }: { log: Logger; recent: RecentLog },
  closers: Closers,
): Promise<{ server: RpcServer; metrics: { metrics_url?: string } }> {
  const { session, relay, leases, dataDir, keyring, startedAt } = opened;
  const pages = new PageAccess();
  let server: RpcServer | null = null;
  const methods = daemonMethods(session, leases, dataDir, keyring, {
    info: () => ({
      version: VERSION,
      relay: relay.location,
      lease_backend: leases.kind,
      url: server?.url ?? null,
      uptime_ms: Date.now() - startedAt,
    }),
    rpcStats: () => ({ ...endpoint.stats, ...(server?.stats ?? {}) }),
    statusLink: () => statusLink(server?.url ?? null, pages),
  });
  const endpoint = new RpcEndpoint(methods, log.child({ component: 'rpc' }));
  const rates = closers.add(new RateHistory(() => ({ ...session.stats.counters })), (opened) => Promise.resolve(opened.close()));
  const routes = daemonRoutes({
    ...{ session, relay, leases, recent, rates, pages, startedAt, version: VERSION },
    rpc: () => ({ endpoint: endpoint.stats, transport: server?.stats ?? null }),
    relayKind: config.relay.kind,
    journalPath: dataDir.journalPath,
  });
  const rpcLog = log.child({ component: 'rpc' });
  server = closers.add(
    await startRpcServer(config.listen, token, endpoint, LIMITS, { allowOrigins: config.allowOrigins, log: rpcLog, routes, pages }),
    (opened) => opened.close(),
  );
  if (!config.metricsListen) return { server, metrics: {} };
  const failed = (error: unknown) => rpcLog.error({ err: error }, 'an HTTP request failed unexpectedly');
  const plain = closers.add(await startPlainHttp(config.metricsListen, routes, failed), (opened) => opened.close());
  return { server, metrics: { metrics_url: `${plain.url}/metrics` } };
}

/**
 * The status page's address with a fresh one-time code (proposals/daemon.md §Status page). A
 * daemon on a Unix socket has no address a browser opens.
 */
function statusLink(url: string | null, pages: PageAccess): { url: string; expires_at_ms: number } {
  if (url === null || !url.startsWith('ws://'))
    throw new OpsyncError(
      'config_invalid',
      'This daemon listens on a Unix socket, which a browser cannot open; start it with --listen HOST:PORT to see its status page.',
    );
  const { code, expires_at_ms } = pages.mintCode();
  return { url: `http${url.slice(2)}/status/open?code=${code}`, expires_at_ms };
}

/** Opens the session over the data directory's journal and checkpoint copies. */
function openSession(
  config: DaemonConfig,
  dataDir: DataDir,
  identity: Pick<SessionDeps, 'device' | 'deviceKey' | 'keyring' | 'crypto' | 'relay'> & { log: Logger; progress: Progress },
): Promise<Session> {
  const { log, progress } = identity;
  return Session.open({
    ...identity,
    checkpoints: new DirCheckpointStore(dataDir.checkpointsDir),
    now: Date.now,
    journalLocation: dataDir.journalPath,
    openJournal: async (visit) =>
      (await FileJournal.open(dataDir.journalPath, identity.device, visit, (done, total) => progress('journal', done, total))).journal,
    createMinter: createOpMinter,
    log: log.child({ component: 'session' }),
    progress,
    options: { maxSkewMs: config.maxSkewMs },
  });
}

/** Every method the daemon serves: sync (with key import and export), leases, conversations, and rpc.discover over them all. */
function daemonMethods(
  session: Session,
  leases: Parameters<typeof leaseMethods>[1],
  dataDir: DataDir,
  keyring: Keyring,
  facts: Pick<SyncServices, 'info' | 'rpcStats' | 'statusLink'>,
): MethodSpec[] {
  const methods: MethodSpec[] = [
    ...syncMethods({
      session,
      ...facts,
      importKey: async (text) => {
        const key = parseKeyFile(text, 'the imported key');
        await dataDir.saveKey(key);
        return { scope: scopeKey(key.scope), kid: key.kid, folded: await session.importKey(key) };
      },
      exportKey: (scope: Scope) => {
        const key = keyring.forScope(scope);
        if (!key)
          throw new OpsyncError('key_missing', `This device holds no key for scope ${scopeKey(scope)}.`, { scope: scopeKey(scope) });
        return encodeKeyFile(key);
      },
    }),
    ...leaseMethods(session, leases),
    ...conversationMethods(session),
  ];
  methods.push(discoverMethod(() => methods, VERSION));
  return methods;
}

async function openRelay(
  config: DaemonConfig,
  device: Parameters<typeof DirectoryRelay.open>[0]['self'],
  crypto: ReturnType<typeof createNodeCoreCrypto>,
): Promise<Relay> {
  if (config.relay.kind === 'postgres') {
    return PostgresRelay.open({ url: config.relay.url, self: device, crypto, horizonMs: config.evictionHorizonMs });
  }
  return DirectoryRelay.open({ root: config.relay.path, self: device, crypto, horizonMs: config.evictionHorizonMs });
}

/** The lease coordinator --lease-backend names (proposals/leases.md says which to use when). */
async function openLeases(config: DaemonConfig): Promise<LeaseCoordinator> {
  switch (config.leaseBackend) {
    case 'memory':
      return memoryCoordinator();
    case 'postgres':
      return pgCoordinator(config.pgUrl!);
    case 'dir': {
      if (config.relay.kind !== 'dir') {
        throw new OpsyncError(
          'config_invalid',
          '--lease-backend dir serves daemons on one host that share a relay folder; with a postgres:// relay use --lease-backend postgres.',
        );
      }
      const dir = await leaseDirFor(config.relay.path, config.leaseDir, process.env);
      await ensureDir(dir, 0o700);
      return dirCoordinator(dir);
    }
  }
}

async function passphrase(config: DaemonConfig): Promise<string | null> {
  if (config.passphraseFile !== null) {
    try {
      return (await readFile(config.passphraseFile, 'utf8')).trim();
    } catch (error) {
      throw new OpsyncError('config_invalid', `Cannot read --passphrase-file ${config.passphraseFile}: ${(error as Error).message}.`);
    }
  }
  return process.env.OPSYNC_PASSPHRASE ?? null;
}
