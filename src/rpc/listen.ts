import type { Server } from 'node:http';
import { connect as netConnect } from 'node:net';
import { lstat, rm } from 'node:fs/promises';
import { OpsyncError } from '../util/opsync-error.js';

/** Where a server listens: host and port (port 0 picks one), or a Unix socket path. */
export type Listen = { readonly host: string; readonly port: number } | { readonly socketPath: string };

/** Starts `http` listening on `listen`; a taken or forbidden address is `config_invalid` naming it. */
export async function listenOn(http: Server, listen: Listen): Promise<void> {
  if ('socketPath' in listen) await clearStaleSocket(listen.socketPath);
  await new Promise<void>((resolve, reject) => {
    http.once('error', (error: NodeJS.ErrnoException) => {
      const where = 'socketPath' in listen ? listen.socketPath : `${listen.host}:${listen.port}`;
      if (error.code === 'EADDRINUSE')
        reject(
          new OpsyncError('config_invalid', `${where} is already in use; choose another --listen address (port 0 picks a free one).`, {
            listen: where,
          }),
        );
      else if (error.code === 'EACCES') reject(new OpsyncError('config_invalid', `Not allowed to listen on ${where}.`, { listen: where }));
      else reject(new OpsyncError('config_invalid', `Cannot listen on ${where}: ${error.message}.`, { listen: where }));
    });
    if ('socketPath' in listen) http.listen(listen.socketPath, () => resolve());
    else http.listen(listen.port, listen.host, () => resolve());
  });
}

/**
 * A socket file nobody answers on is left over from a crash: remove it. A live one is in use.
 * Anything else at the path (a file, a folder, a link) is not this daemon's to remove.
 */
async function clearStaleSocket(path: string): Promise<void> {
  const seen = await lstat(path).catch(() => null);
  if (seen === null) return;
  if (!seen.isSocket()) {
    throw new OpsyncError(
      'config_invalid',
      `--listen ${path}: something that is not a socket stands there; opsync replaces only a socket a crashed daemon left behind. Choose another path.`,
      { listen: path },
    );
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = netConnect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (!live) await rm(path, { force: true });
}
