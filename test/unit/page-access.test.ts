import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { PAGE_COOKIE, PageAccess } from '../../src/rpc/page-access.js';

function request(cookie?: string): IncomingMessage {
  return { headers: cookie === undefined ? {} : { cookie } } as IncomingMessage;
}

describe('status page access', () => {
  it('opens a page session with a code once, within two minutes, and admits only that session', () => {
    let now = 1_000_000;
    const access = new PageAccess(() => now);
    const { code, expires_at_ms } = access.mintCode();
    expect(expires_at_ms).toBe(now + 120_000);
    const session = access.redeem(code);
    expect(session).not.toBeNull();
    expect(access.redeem(code)).toBeNull();
    expect(access.admits(request(`other=1; ${PAGE_COOKIE}=${session!}`))).toBe(true);
    expect(access.admits(request(`${PAGE_COOKIE}=${session!.slice(1)}x`))).toBe(false);
    expect(access.admits(request())).toBe(false);
    expect(PageAccess.cookie(session!)).toMatch(/HttpOnly; SameSite=Strict; Path=\/status;/);

    const late = access.mintCode();
    now += 120_001;
    expect(access.redeem(late.code)).toBeNull();
    // A page session lasts twelve hours.
    now += 12 * 3_600_000;
    expect(access.admits(request(`${PAGE_COOKIE}=${session!}`))).toBe(false);
  });
});
