import type { CheckpointHeader } from '../checkpoint/checkpoint.js';
import type { FoldState } from '../fold/fold-state.js';
import type { CheckpointHash } from '../oplog/ids.js';
import { parseFrontier, type Frontier } from '../oplog/frontier.js';
import { isOpsyncError, OpsyncError } from '../util/opsync-error.js';
import type { CheckpointFile, CheckpointHeaderJson, CheckpointStream, HeaderCheck, Relay } from '../../relay/port/relay.js';
import {
  DAMAGED_CHECKPOINT,
  mergeAndSeal,
  openCheckpoint,
  trustedHeader,
  verifiedFileBytes,
  type HeaderTrust,
  type Publisher,
} from './checkpoint-seal.js';
import type { CheckpointStore } from './checkpoint-store.js';
import type { SessionLog } from './session-log.js';
import type { Progress } from '../util/progress.js';

export interface BaseRef {
  readonly hash: CheckpointHash;
  readonly frontier: Frontier;
}

export interface BaseCheckpointsDeps {
  readonly relay: Relay;
  readonly store: CheckpointStore;
  /** This device, cutting and signing the merges it publishes. */
  readonly publisher: Publisher;
  /** How checkpoints the relay serves are authenticated (`CheckpointAuthority`). */
  readonly trust: Exclude<HeaderTrust, 'local'>;
  readonly authentic: HeaderCheck;
  readonly log?: SessionLog | undefined;
  /** Hears the records of a checkpoint loaded, of its total. */
  readonly progress?: Progress | undefined;
}

type Opened = { header: CheckpointHeader; state: FoldState };

/**
 * The checkpoints a device depends on — the one its journal is based on, and the one it
 * published last (which it may compact onto) — their local copies, so that a restart finds its
 * base even when the relay is out of reach or has collected it (proposals/session.md §Local
 * checkpoint copies), and the base's merges with other checkpoints (§Rebase).
 */
export class BaseCheckpoints {
  /** The checkpoint the journal is based on (its base entry), if any. */
  current: BaseRef | null = null;
  /** The checkpoint this device last cut (and so need not verify when it compacts onto it). */
  published: BaseRef | null = null;
  /**
   * The base when it has no local copy yet (a bootstrap; a copy missing or damaged at start,
   * read from the relay instead): copied in the background, again after each pump until that
   * succeeds, and before the next own op.
   */
  private uncopied: string | null = null;
  /** The copy under way, which every caller that needs it shares. */
  private copying: { hash: string; done: Promise<void> } | null = null;
  /** The base whose background copy failed and was logged (once per base, not once per pump). */
  private warned: string | null = null;
  /** Copies that outlive the call that started them; `settled` waits for them. */
  private readonly background = new Set<Promise<unknown>>();

  constructor(private readonly deps: BaseCheckpointsDeps) {}

  /**
   * A checkpoint this device is based on: its local copy, else the relay's — and then the copy
   * is made again (a bootstrap killed before its background copy; a damaged copy).
   */
  async load(hash: string): Promise<Opened> {
    try {
      const local = await this.deps.store.get(hash);
      if (local) return await openCheckpoint(local, this.deps.publisher.keyring, this.deps.publisher.crypto, 'local', this.loaded);
    } catch (error) {
      if (!isOpsyncError(error) || !DAMAGED_CHECKPOINT.has(error.code)) throw error;
      // A damaged copy (a bad disk block): the relay's copy, when it still has one, replaces it.
      this.deps.log?.warn(
        { err: error, checkpoint_hash: hash },
        "this device's copy of its base checkpoint is damaged; reading the relay's",
      );
      await this.deps.store.discard(hash);
    }
    const remote = await this.deps.relay.readCheckpoint(hash);
    if (!remote) {
      throw new OpsyncError(
        'checkpoint_not_found',
        `The journal is based on checkpoint ${hash}, which is neither in this data directory (intact) nor on the relay.`,
        { checkpoint_hash: hash },
      );
    }
    // Only a copy the relay can give is waited for: appends over a base found nowhere go on.
    this.uncopied = hash;
    return this.openFromRelay(remote);
  }

  /** Loads and verifies a checkpoint from the relay (a caller that bases the journal on it copies it locally first). */
  async adopt(header: CheckpointHeaderJson): Promise<Opened> {
    const read = await this.deps.relay.readCheckpoint(header.checkpoint_hash);
    if (!read) throw new OpsyncError('checkpoint_not_found', `Checkpoint ${header.checkpoint_hash} disappeared from the relay.`);
    return this.openFromRelay(read);
  }

  /** Copies a checkpoint from the relay into the local store. */
  async copy(hash: string): Promise<void> {
    const bytes = await this.deps.relay.checkpointBytes(hash);
    if (!bytes) throw new OpsyncError('checkpoint_not_found', `Checkpoint ${hash} is no longer on the relay.`, { checkpoint_hash: hash });
    await this.deps.store.put(hash, bytes);
    if (this.uncopied === hash) this.uncopied = null;
  }

  /**
   * Copies a checkpoint from the relay into the local store, checking on the way that it is
   * authentic and that every chunk opens to its digest (`verifiedFileBytes`); for a checkpoint
   * whose state the caller verified against its own journal, so that no chunk is folded.
   */
  async copyVerified(hash: string): Promise<void> {
    const read = await this.deps.relay.readCheckpoint(hash);
    if (!read) throw new OpsyncError('checkpoint_not_found', `Checkpoint ${hash} is no longer on the relay.`, { checkpoint_hash: hash });
    const header = await trustedHeader(read.header, this.deps.publisher.crypto, this.deps.trust);
    await this.deps.store.put(hash, verifiedFileBytes(read, header, this.deps.publisher.keyring));
  }

  /** True while the base has no local copy. */
  get needsCopy(): boolean {
    return this.uncopied !== null;
  }

  /** Makes the base's missing local copy; concurrent callers share one attempt, and a failed one leaves it missing. */
  ensureCopied(): Promise<void> {
    const hash = this.uncopied;
    if (hash === null) return Promise.resolve();
    if (this.copying?.hash !== hash) {
      const copying = {
        hash,
        done: this.copy(hash).finally(() => {
          if (this.copying === copying) this.copying = null;
        }),
      };
      this.copying = copying;
    }
    return this.copying.done;
  }

  /** Stores a checkpoint this device cut, and remembers it as the one it published last. */
  async keepPublished(published: BaseRef, bytes: Iterable<Uint8Array>): Promise<void> {
    await this.deps.store.put(published.hash, bytes);
    this.published = published;
  }

  /** The journal is now based on `base`; `copied` false when it has no local copy yet. */
  rebased(base: BaseRef | null, copied: boolean): void {
    this.current = base;
    this.uncopied = copied || !base ? null : base.hash;
  }

  /** Copies the base that has no local copy yet, in the background (a failure is logged, and the next call tries again). */
  copyLater(): void {
    const hash = this.uncopied;
    if (hash === null) return;
    const copy = this.ensureCopied().catch((error: unknown) => {
      if (this.warned !== hash)
        this.deps.log?.warn(
          { err: error, checkpoint_hash: hash },
          'could not keep a local copy of a checkpoint; trying again after each pump',
        );
      this.warned = hash;
    });
    this.background.add(copy);
    void copy.finally(() => this.background.delete(copy));
  }

  /** Resolves once the background copies have finished. */
  async settled(): Promise<void> {
    await Promise.all(this.background);
  }

  /**
   * Drops the local copies this device no longer needs — all but its base's and the one it
   * published last — so that the data directory does not grow by a checkpoint at every automatic
   * checkpoint. `temps`: at start, when nothing is being written, also the leftovers of copies a
   * crash interrupted.
   */
  async prune(temps = false): Promise<void> {
    const keep = new Set([this.current?.hash, this.published?.hash].filter((hash) => hash !== undefined));
    await this.deps.store
      .keepOnly(keep, temps)
      .catch((error: unknown) => this.deps.log?.warn({ err: error }, 'could not remove checkpoint copies this device no longer needs'));
  }

  /**
   * The checkpoint of everything the base and `header` cover (`mergeCheckpoints`), sealed: for a
   * rebase onto a checkpoint that covers some device less far than the base
   * (proposals/session.md §Rebase); or why the two cannot be merged.
   */
  async mergedWith(header: CheckpointHeaderJson): Promise<CheckpointFile | string> {
    const base = this.current!;
    let mine;
    try {
      mine = await this.load(base.hash);
    } catch (error) {
      if (isOpsyncError(error) && error.code === 'checkpoint_not_found') return "this device's base is nowhere to merge it with";
      throw error;
    }
    const theirs = await this.adopt(header);
    const merged = mergeAndSeal(
      { frontier: mine.header.frontier, state: mine.state },
      { frontier: theirs.header.frontier, state: theirs.state },
      this.deps.publisher,
    );
    return merged ?? 'the two name different ops at the same seq of one device (a forked chain)';
  }

  /**
   * For a chain restart above the base (`RelayMending`): the base merged with the relay's latest
   * checkpoint when that covers some other device further (a device behind both then finds one
   * checkpoint that covers both), else null. Not when the latest covers this
   * device's ops further than the base, since the restart anchors on the base's head.
   */
  async mergedWithLatest(): Promise<CheckpointFile | null> {
    const base = this.current;
    const header = await this.deps.relay.latestCheckpoint(undefined, this.deps.authentic);
    const covers = header && parseFrontier(header.frontier);
    if (!base || !covers) return null;
    const further = [...covers].filter(([device, head]) => head.seq > (base.frontier.get(device)?.seq ?? -1));
    if (further.length === 0 || further.some(([device]) => device === this.deps.relay.self)) return null;
    const merged = await this.mergedWith(header).catch((error: unknown) => (error as Error).message);
    if (typeof merged !== 'string') return merged;
    this.deps.log?.warn(
      { checkpoint_hash: header.checkpoint_hash, reason: merged },
      "could not merge the relay's latest checkpoint with this device's base",
    );
    return null;
  }

  /** Opens a checkpoint the relay served; one found damaged is reported, so that a device holding a copy restores it. */
  private readonly loaded = (done: number, total: number): void => this.deps.progress?.('checkpoint', done, total);

  private async openFromRelay(read: CheckpointStream): Promise<Opened> {
    try {
      return await openCheckpoint(read, this.deps.publisher.keyring, this.deps.publisher.crypto, this.deps.trust, this.loaded);
    } catch (error) {
      if (isOpsyncError(error) && DAMAGED_CHECKPOINT.has(error.code))
        await this.deps.relay.reportDamage({ checkpoint: read.header.checkpoint_hash }).catch(() => {});
      throw error;
    }
  }
}
