import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The layering and purity rules are enforced by lint (eslint.config.js). These probes prove the
 * rules bite: each writes a small violating file into the tree, lints it, and expects the error.
 */
const probes: string[] = [];
afterAll(async () => {
  await Promise.all(probes.map((path) => rm(path, { force: true })));
});

async function lintProbe(relative: string, code: string, also?: [string, string]): Promise<string[]> {
  const files = [[relative, code], ...(also ? [also] : [])] as Array<[string, string]>;
  for (const [file, text] of files) {
    const path = join(process.cwd(), file);
    probes.push(path);
    await writeFile(path, text);
  }
  const results = await new ESLint({ cwd: process.cwd() }).lintFiles([relative]);
  return results.flatMap((r) => r.messages.map((m) => `${m.ruleId}: ${m.message}`));
}

describe('architecture rules', () => {
  it('refuses an upward import between layers', async () => {
    const messages = await lintProbe(
      'src/oplog/zz-probe-layer.ts',
      "import { FoldState } from '../fold/fold-state.js';\nexport const probe = FoldState;\n",
    );
    expect(messages.join('\n')).toContain('import-x/no-restricted-paths');
  });

  it('refuses I/O, the clock and randomness in the pure core', async () => {
    const messages = await lintProbe(
      'src/fold/zz-probe-pure.ts',
      "import { readFileSync } from 'node:fs';\nexport const probe = (): unknown => [readFileSync, Date.now(), Math.random()];\n",
    );
    const text = messages.join('\n');
    expect(text).toContain('no-restricted-imports');
    expect(text).toContain('no-restricted-globals');
    expect(text).toContain('no-restricted-properties');
  });

  it('refuses relay code importing anything from src/ but util, oplog and platform', async () => {
    const messages = await lintProbe(
      'relay/port/zz-probe-relay.ts',
      "import { Keyring } from '../../src/crypto/keyring.js';\nexport const probe = Keyring;\n",
    );
    expect(messages.join('\n')).toContain('relay/ may import only');
  });

  it('refuses one relay backend importing another, and a src layer other than the daemon choosing a backend', async () => {
    const backend = await lintProbe(
      'relay/memory/zz-probe-backend.ts',
      "import { DirectoryRelay } from '../directory/directory-relay.js';\nexport const probe = DirectoryRelay;\n",
    );
    expect(backend.join('\n')).toContain('never another backend');
    const session = await lintProbe(
      'src/session/zz-probe-backend.ts',
      "import { MemoryRelayStore } from '../../relay/memory/memory-relay.js';\nexport const probe = MemoryRelayStore;\n",
    );
    expect(session.join('\n')).toContain('Only src/daemon chooses a relay backend');
    const journal = await lintProbe(
      'src/journal/zz-probe-port.ts',
      "import type { Relay } from '../../relay/port/relay.js';\nexport type Probe = Relay;\n",
    );
    expect(journal.join('\n')).toContain('Only the session and the layers above it use the relay');
  });

  it('refuses an import cycle', async () => {
    const messages = await lintProbe(
      'src/fold/zz-probe-cycle-a.ts',
      "import { b } from './zz-probe-cycle-b.js';\nexport const a = (): unknown => b;\n",
      ['src/fold/zz-probe-cycle-b.ts', "import { a } from './zz-probe-cycle-a.js';\nexport const b = (): unknown => a;\n"],
    );
    expect(messages.join('\n')).toContain('import-x/no-cycle');
  });

  it('refuses floating promises and any', async () => {
    const messages = await lintProbe('src/crypto/zz-probe-promise.ts', 'export function probe(x: any): void {\n  Promise.resolve(x);\n}\n');
    const text = messages.join('\n');
    expect(text).toContain('no-floating-promises');
    expect(text).toContain('no-explicit-any');
  });
});
