// Lint is part of `npm test`. It enforces the architecture mechanically:
//  - layers inside src/ import downward only (README.md §Layout and specs), and nothing imports in a cycle;
//  - the pure core imports no Node module, no I/O library, and reads no clock or randomness;
//  - relay/ sees only src/util, src/oplog and src/platform; its backends (directory, postgres, memory)
//    import only relay/port and never each other; in src/ only the daemon chooses a backend, and
//    the layers below session do not import relay/ at all;
//  - no floating promises, no `any`, no console outside the CLI;
//  - no source file over 400 lines of code, no function over 60 (the tables of method descriptors aside).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/** src/ layers, lowest first; a layer may import only from layers before it (and itself). */
const layers = [
  ['util'],
  ['oplog'],
  ['platform'],
  ['crypto'],
  ['journal'],
  ['fold'],
  ['checkpoint'],
  ['lease', 'conversation'],
  ['session'],
  ['rpc'],
  ['daemon'],
  ['cli'],
  ['client'],
  ['testing'],
];

/** Pure core: no I/O, no clock, no randomness (README.md §Layout and specs). */
const pureCore = ['src/util', 'src/oplog', 'src/fold', 'src/checkpoint', 'src/conversation'];
/** The pure files of layers that also hold adapters. */
const pureFiles = ['src/lease/lease-rules.ts', 'src/lease/fence.ts'];

const layerZones = layers.flatMap((group, index) => {
  const higher = layers.slice(index + 1).flat();
  if (higher.length === 0) return [];
  return group.map((name) => ({
    target: `./src/${name}`,
    from: higher.map((h) => `./src/${h}`),
    message: `src/${name} sits below these layers and may not import them (README.md §Layout and specs).`,
  }));
});

/** relay/ concept folders: the port every backend implements, and the backends. */
const relayBackends = ['directory', 'postgres', 'memory'];
/** src/ layers that may use the relay port (the session drives it; the layers above pass it on). */
const relayUsers = ['session', 'rpc', 'daemon', 'cli'];

const relayZones = [
  {
    target: './relay',
    from: './src',
    except: ['./util', './oplog', './platform'],
    message: 'relay/ may import only src/util, src/oplog and src/platform (README.md §Layout and specs).',
  },
  {
    target: './relay/port',
    from: relayBackends.map((name) => `./relay/${name}`),
    message: 'relay/port is what every backend implements; it may not import a backend (README.md §Layout and specs).',
  },
  ...relayBackends.map((name) => ({
    target: `./relay/${name}`,
    from: relayBackends.filter((other) => other !== name).map((other) => `./relay/${other}`),
    message: `relay/${name} is one backend; it may import relay/port, never another backend (README.md §Layout and specs).`,
  })),
  {
    target: layers
      .flat()
      .filter((name) => name !== 'daemon')
      .map((name) => `./src/${name}`),
    from: relayBackends.map((name) => `./relay/${name}`),
    message: 'Only src/daemon chooses a relay backend; everything else sees relay/port (README.md §Layout and specs).',
  },
  {
    target: layers
      .flat()
      .filter((name) => !relayUsers.includes(name))
      .map((name) => `./src/${name}`),
    from: './relay',
    message: 'Only the session and the layers above it use the relay (README.md §Layout and specs).',
  },
];

const ioModules = ['node:*', 'fs', 'path', 'os', 'crypto', 'child_process', 'ws', 'pg', 'chokidar', 'pino', 'uuid'];

/** The typed client sees only the API's types (src/rpc/api.ts): hosts load it, not the daemon. */
const clientMessage = 'The client imports only the types of src/rpc/api.ts (proposals/rpc.md §Client).';
const clientZones = [
  {
    target: './src/client',
    from: layers
      .flat()
      .filter((name) => name !== 'client' && name !== 'rpc' && name !== 'testing')
      .map((name) => `./src/${name}`),
    message: clientMessage,
  },
  { target: './src/client', from: './src/rpc', except: ['./api.ts'], message: clientMessage },
];

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  // Makes import-x parse and resolve TypeScript files; without it no-cycle silently sees nothing.
  importX.flatConfigs.typescript,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    settings: { 'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })] },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'error',
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-restricted-paths': ['error', { zones: [...layerZones, ...relayZones, ...clientZones] }],
    },
  },
  {
    files: [...pureCore.map((dir) => `${dir}/**/*.ts`), ...pureFiles],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ioModules, message: 'The pure core does no I/O: inject a port instead (README.md §Layout and specs).' }] },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'Date', message: 'The pure core reads no clock: take `now` as a parameter.' },
        { name: 'performance', message: 'The pure core reads no clock: take `now` as a parameter.' },
        { name: 'process', message: 'The pure core has no process access.' },
        { name: 'crypto', message: 'The pure core takes hashing and randomness as parameters.' },
        { name: 'setTimeout', message: 'The pure core schedules nothing.' },
        { name: 'setInterval', message: 'The pure core schedules nothing.' },
      ],
      'no-restricted-properties': [
        'error',
        { object: 'Math', property: 'random', message: 'The pure core takes randomness as a parameter.' },
      ],
    },
  },
  {
    // One source for Node and browsers: the client and its browser entry load nothing from Node.
    files: ['src/client/**/*.ts'],
    ignores: ['src/client/node.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ioModules, message: 'The client runs in browsers too: Node modules only in src/client/node.ts.' }] },
      ],
    },
  },
  {
    files: ['src/**/*.ts', 'relay/**/*.ts'],
    rules: {
      'max-lines': ['error', { max: 400, skipBlankLines: true, skipComments: true }],
      'max-lines-per-function': ['error', { max: 60, skipBlankLines: true, skipComments: true, IIFEs: true }],
    },
  },
  {
    // Tables of method descriptors: one entry per method, each short.
    files: ['src/rpc/*-methods.ts'],
    rules: { 'max-lines-per-function': 'off' },
  },
  {
    files: ['src/cli/**/*.ts', 'test/bench/**/*.ts', 'test/demo/**/*.ts', 'test/children/**/*.ts', 'examples/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
  {
    files: ['eslint.config.js', 'vitest.config.ts'],
    ...tseslint.configs.disableTypeChecked,
  },
);
