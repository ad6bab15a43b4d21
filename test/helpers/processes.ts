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
 * became a `sleep`, which reaps nothing; killing the parent hands the zombie to init.
 */
export async function unreapedZombie(): Promise<{ parent: ChildProcess; identity: ProcessIdentity }> {
  const parent = spawn('bash', ['-c', 'sleep 600 & echo $!; exec sleep 600'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const stdout = parent.stdout;
  if (!stdout) throw new Error('the shell has no stdout');
  const pid = Number((await once(createInterface({ input: stdout }), 'line'))[0]);
  const identity = await identityOf(pid);
  if (!identity) throw new Error(`the child ${pid} did not start`);
  process.kill(pid, 'SIGKILL');
  // No event tells another process's state: look until the kernel shows the zombie (bounded).
  for (const deadline = Date.now() + 10_000; !(await readFile(`/proc/${pid}/stat`, 'utf8')).match(/\) Z /); ) {
    if (Date.now() > deadline) throw new Error(`process ${pid} did not become a zombie`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return { parent, identity };
}
