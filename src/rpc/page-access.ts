import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** How long a one-time code opens the page: long enough to paste it into a browser. */
const CODE_MS = 120_000;
/** How long the page stays open in a browser once a code opened it. */
const SESSION_MS = 12 * 3_600_000;
/** Codes and page sessions held at most (the oldest goes first): a few people look at one daemon. */
const MAX_HELD = 16;
export const PAGE_COOKIE = 'opsync_page';

/**
 * Who may read the status page (proposals/daemon.md §Status page). The token never goes in a URL:
 * a client holding it asks for a one-time code (`sync.status_link`), the browser trades the code
 * once for a session cookie (HttpOnly, SameSite=Strict, Path=/status) and is sent on to the page
 * with the code gone from its address. A code serves once and for CODE_MS at most.
 */
export class PageAccess {
  private readonly codes = new Map<string, number>();
  private readonly sessions = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** A fresh one-time code and when it expires. */
  mintCode(): { code: string; expires_at_ms: number } {
    const code = randomBytes(18).toString('base64url');
    const expires = this.now() + CODE_MS;
    hold(this.codes, code, expires);
    return { code, expires_at_ms: expires };
  }

  /** Trades a code for a session id (the cookie's value), once; null when the code is unknown, used or expired. */
  redeem(code: string): string | null {
    const expires = this.codes.get(code);
    this.codes.delete(code);
    if (expires === undefined || expires <= this.now()) return null;
    const session = randomBytes(32).toString('base64url');
    hold(this.sessions, session, this.now() + SESSION_MS);
    return session;
  }

  /** Whether the request carries the cookie of a page session that has not expired. */
  admits(request: IncomingMessage): boolean {
    const presented = cookieOf(request, PAGE_COOKIE);
    if (presented === null) return false;
    const given = Buffer.from(presented);
    for (const [session, expires] of this.sessions) {
      const held = Buffer.from(session);
      if (held.length === given.length && timingSafeEqual(held, given)) return expires > this.now();
    }
    return false;
  }

  /** The Set-Cookie header for a session `redeem` opened. */
  static cookie(session: string): string {
    return `${PAGE_COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/status; Max-Age=${SESSION_MS / 1000}`;
  }
}

function hold(map: Map<string, number>, key: string, expires: number): void {
  map.set(key, expires);
  if (map.size > MAX_HELD) map.delete(map.keys().next().value!);
}

function cookieOf(request: IncomingMessage, name: string): string | null {
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const [key, ...value] = part.trim().split('=');
    if (key === name) return value.join('=');
  }
  return null;
}
