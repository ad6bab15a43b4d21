import { mkdir, symlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultDataDir, parseListen, parseStartArgs } from '../../src/daemon/config.js';
import { serverUrl } from '../../src/rpc/rpc-server.js';
import { useTempDirs } from '../helpers/temp-dir.js';

describe('--listen and the URL clients find in daemon.json', () => {
  it('gives every address a URL that names the same host and port', () => {
    const cases: Array<[string, string, string]> = [
      ['127.0.0.1:7420', 'ws://127.0.0.1:7420', '127.0.0.1'],
      ['localhost:80', 'ws://localhost:80', 'localhost'],
      ['[::1]:9000', 'ws://[::1]:9000', '[::1]'],
      ['[fe80::1:2]:1', 'ws://[fe80::1:2]:1', '[fe80::1:2]'],
    ];
    for (const [flag, url, hostname] of cases) {
      const listen = parseListen(flag);
      expect(serverUrl(listen, null)).toBe(url);
      expect(new URL(serverUrl(listen, null)).hostname).toBe(hostname);
    }
  });

  it('names the port the server got when it asked for port 0', () => {
    expect(serverUrl(parseListen('[::1]:0'), 43117)).toBe('ws://[::1]:43117');
    expect(serverUrl(parseListen('127.0.0.1:0'), 43117)).toBe('ws://127.0.0.1:43117');
  });

  it('gives a socket path a ws+unix URL', () => {
    expect(serverUrl(parseListen('/run/opsync.sock'), null)).toBe('ws+unix:///run/opsync.sock');
  });
});

describe('the default data directory', () => {
  it('is under $XDG_DATA_HOME, unless that is unset, empty or relative (which the XDG spec says to ignore)', () => {
    const fallback = join(homedir(), '.local', 'share', 'opsync');
    expect(defaultDataDir({ XDG_DATA_HOME: '/data/home' })).toBe('/data/home/opsync');
    expect(defaultDataDir({})).toBe(fallback);
    expect(defaultDataDir({ XDG_DATA_HOME: '' })).toBe(fallback);
    expect(defaultDataDir({ XDG_DATA_HOME: 'relative/dir' })).toBe(fallback);
  });
});

describe('where the relay folder may be', () => {
  const tempDir = useTempDirs();

  it('refuses a relay folder that reaches into the data directory through a symbolic link, where its private keys are', async () => {
    const root = await tempDir();
    const dataDir = join(root, 'data');
    await mkdir(join(dataDir, 'shared'), { recursive: true });
    await symlink(join(dataDir, 'shared'), join(root, 'relay-link'));
    expect(() => parseStartArgs(['--data-dir', dataDir, '--relay', join(root, 'relay-link')], {})).toThrow(/inside the data directory/);
    expect(() => parseStartArgs(['--data-dir', join(root, 'relay-link', 'nested'), '--relay', dataDir], {})).toThrow(
      /inside the relay folder/,
    );
  });
});
