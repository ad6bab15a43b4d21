import { OpsyncError } from '../util/opsync-error.js';
import { isJsonObject } from '../util/json.js';

/**
 * Who may read an op: the user's own devices (`"personal"`) or an organisation
 * (`{ "org": "<name>" }`). A scope selects the encryption key; it is not part of record keys
 * (proposals/fold.md): re-writing a record in another scope moves it there.
 */
export type Scope = 'personal' | { readonly org: string };

const ORG_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

export function isScope(value: unknown): value is Scope {
  if (value === 'personal') return true;
  return isJsonObject(value) && Object.keys(value).length === 1 && typeof value.org === 'string' && ORG_NAME.test(value.org);
}

export function parseScope(value: unknown, field = 'scope'): Scope {
  if (isScope(value)) return value;
  throw new OpsyncError(
    'invalid_scope',
    `${field} must be "personal" or {"org": name} with a name of 1 to 64 characters of a-z, 0-9, "_" or "-".`,
    { field },
  );
}

/** A stable string for a scope: `personal` or `org:<name>` (keys of maps, file names of key files). */
export function scopeKey(scope: Scope): string {
  return scope === 'personal' ? 'personal' : `org:${scope.org}`;
}

export function scopeFromKey(key: string): Scope {
  if (key === 'personal') return 'personal';
  return parseScope({ org: key.startsWith('org:') ? key.slice(4) : '' }, 'scope key');
}
