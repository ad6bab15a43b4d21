import type { Relay, Watch } from '../../relay/port/relay.js';
import type { Serializer } from '../util/serial.js';
import type { SessionLog } from './session-log.js';
import { isOpsyncError } from '../util/opsync-error.js';

export interface LivePumpsDeps {
  readonly relay: Relay;
  /** The session's queue: a background pump waits behind explicit calls. */
  readonly serial: Serializer;
  /** One background pump (and the maintenance it may start); runs on `serial`. */
  readonly pump: () => Promise<void>;
  /** Whether the session still takes work (not closed, not failed). */
  readonly usable: () => boolean;
  /** Records why the last background pump failed (`sync.status.last_error`). */
  readonly failed: (message: string) => void;
  readonly periodicPumpMs: number;
  readonly pushDebounceMs: number;
  readonly log?: SessionLog | undefined;
}

/** How often a live session pumps when the relay cannot be watched. */
const WATCHLESS_PUMP_MS = 1_000;

/**
 * When a live session pumps (proposals/session.md §Live mode): a relay watch triggers a pump
 * when another device writes, each append triggers a debounced push, a trailing pump sends a
 * throttled ack or looks for quiet, and a slow periodic pump stays as a safety net. Triggers that
 * arrive while a pump waits coalesce into it.
 */
export class LivePumps {
  private live: { watch: Watch | null; timer: NodeJS.Timeout } | null = null;
  private pushTimer: NodeJS.Timeout | null = null;
  private laterTimer: NodeJS.Timeout | null = null;
  private queued = false;
  private stopped = false;
  /** The background pump failure last logged, so a relay that stays away is logged once. */
  /** The kind (error code) of the failure last logged, until pumps work again. */
  private loggedError: string | null = null;
  /** Kinds of ignored relay files already logged. */
  private readonly loggedAnomalies = new Set<string>();

  constructor(private readonly deps: LivePumpsDeps) {}

  get isLive(): boolean {
    return this.live !== null;
  }

  /**
   * Starts live sync. A relay that cannot be watched (the system's limit of file watchers is
   * reached, or a file system without change notification) does not stop it: the session pumps
   * every WATCHLESS_PUMP_MS instead, and says so.
   */
  async start(): Promise<void> {
    if (this.live || this.stopped) return;
    const watch = await this.deps.relay
      .watch(() => this.request())
      .catch((error: unknown) => {
        this.deps.log?.warn(
          { err: error, every_ms: WATCHLESS_PUMP_MS },
          'cannot watch the relay for changes: pumping at a fixed interval instead',
        );
        return null;
      });
    const timer = setInterval(
      () => this.request(),
      watch ? this.deps.periodicPumpMs : Math.min(WATCHLESS_PUMP_MS, this.deps.periodicPumpMs),
    );
    timer.unref();
    this.live = { watch, timer };
    this.request();
  }

  /** Queues a pump unless one is already waiting. */
  request(): void {
    if (this.queued || this.stopped || !this.deps.usable()) return;
    this.queued = true;
    void this.deps.serial.run(async () => {
      this.queued = false;
      try {
        await this.deps.pump();
        if (this.loggedError !== null) this.deps.log?.info({ after: this.loggedError }, 'background pumps work again');
        this.loggedError = null;
        this.logAnomalies();
      } catch (error) {
        const message = (error as Error).message;
        this.deps.failed(message);
        const kind = isOpsyncError(error) ? error.code : message;
        if (kind !== this.loggedError)
          this.deps.log?.warn({ err: error }, 'background pump failed (logged once per kind of failure until pumps work again)');
        this.loggedError = kind;
      }
    });
  }

  /** Logs each kind of relay file this device ignores (a conflict copy, a damaged segment) the first time it is seen. */
  private logAnomalies(): void {
    for (const [kind, count] of Object.entries(this.deps.relay.anomalies())) {
      if (this.loggedAnomalies.has(kind)) continue;
      this.loggedAnomalies.add(kind);
      this.deps.log?.warn(
        { kind, count },
        'the relay holds files or rows this device ignores (sync.status counts them; logged once per kind)',
      );
    }
  }

  /** After an append: a push once the burst it may belong to has had `pushDebounceMs` to gather. */
  afterAppend(): void {
    if (!this.live || this.pushTimer) return;
    this.pushTimer = setTimeout(() => {
      this.pushTimer = null;
      this.request();
    }, this.deps.pushDebounceMs);
  }

  /** A pump in `delayMs` (a trailing ack, a look for quiet), unless one is already set. */
  later(delayMs: number): void {
    if (!this.live || this.laterTimer) return;
    this.laterTimer = setTimeout(() => {
      this.laterTimer = null;
      this.request();
    }, delayMs);
    this.laterTimer.unref();
  }

  /** Stops every trigger; a pump already queued still runs. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pushTimer) clearTimeout(this.pushTimer);
    if (this.laterTimer) clearTimeout(this.laterTimer);
    if (!this.live) return;
    clearInterval(this.live.timer);
    await this.live.watch?.close();
    this.live = null;
  }
}
