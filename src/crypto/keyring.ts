import { scopeKey, type Scope } from '../oplog/scope.js';
import type { ScopeKey } from './scope-key.js';

/** The scope keys this device holds, by scope and by key id. */
export class Keyring {
  private readonly byScope = new Map<string, ScopeKey>();
  private readonly byKid = new Map<string, ScopeKey>();

  constructor(keys: Iterable<ScopeKey> = []) {
    for (const key of keys) this.add(key);
  }

  /** Adds a key; the newest key for a scope is the one new ops are sealed with. */
  add(key: ScopeKey): void {
    this.byScope.set(scopeKey(key.scope), key);
    this.byKid.set(key.kid, key);
  }

  forScope(scope: Scope): ScopeKey | undefined {
    return this.byScope.get(scopeKey(scope));
  }

  byId(kid: string): ScopeKey | undefined {
    return this.byKid.get(kid);
  }

  all(): ScopeKey[] {
    return [...this.byKid.values()];
  }

  scopes(): string[] {
    return [...this.byScope.keys()].sort();
  }
}
