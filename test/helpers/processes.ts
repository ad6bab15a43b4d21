import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { identityOf, type ProcessIdentity } from '../../src/journal/process-identity.js';

/** A process that runs until it is killed. */
export async function runningProcess(): Promise<ChildProcess> {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  await once(child, 'spawn');
  return child;
}

/**
 * A zombie: a process killed -9 whose parent never reaps it (as under a container without an
 * init), with the identity it had while it ran. Its parent is a shell that started it and then
 * became a `sleep`, which reaps nothing; killing the parent hands the zombie to init. The child
 * is killed only once the shell has become the `sleep`: the shell itself would reap it.
 */
export async function unreapedZombie(): Promise<{ parent: ChildProcess; identity: ProcessIdentity }> {
  const parent = spawn('bash', ['-c', 'sleep 600 & echo $!; exec sleep 600'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const stdout = parent.stdout;
  if (!stdout) throw new Error('the shell has no stdout');
  const pid = Number((await once(createInterface({ input: stdout }), 'line'))[0]);
  const identity = await identityOf(pid);
  if (!identity) throw new Error(`the child ${pid} did not start`);
  await procUntil(`/proc/${parent.pid}/comm`, (text) => text === 'sleep\n', `the shell ${parent.pid} did not become a sleep`);
  process.kill(pid, 'SIGKILL');
  await procUntil(`/proc/${pid}/stat`, (text) => /\) Z /.test(text), `process ${pid} did not become a zombie`);
  return { parent, identity };
}

/** Waits until a /proc file reads as `wanted` says (bounded): no event tells another process's state. */
async function procUntil(path: string, wanted: (text: string) => boolean, failure: string): Promise<void> {
  for (const deadline = Date.now() + 10_000; !wanted(await readFile(path, 'utf8'));) {
    if (Date.now() > deadline) throw new Error(failure);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
