import { execFileSync } from 'node:child_process';
import { chmodSync } from 'node:fs';

/**
 * Child processes in the integration tests (crash appenders, daemons) run the compiled code in
 * dist/; building here guarantees they never run stale code. tsc is incremental, so this is quick.
 */
export default function setup(): void {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', '.'], { stdio: 'inherit' });
  // What `npm run build` does too: the `opsync` bin must be executable (tests run `npx opsync`).
  chmodSync('dist/src/cli/main.js', 0o755);
}
