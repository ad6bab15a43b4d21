import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RpcClient } from '../../src/rpc/rpc-client.js';
import { DaemonProcess } from '../helpers/daemon-process.js';
import { useTempDirs } from '../helpers/temp-dir.js';

const tempDir = useTempDirs();

/**
 * Every RPC param is untrusted (proposals/rpc.md §Requests): whatever a client sends to whatever method, the
 * daemon answers with a JSON-RPC response for that id — a result or a named error — and no
 * input reaches an unexpected exception (`internal_errors` stays 0). One real daemon.
 */
describe('random requests to every method', () => {
  it('are each answered with a result or a named error, and none is an internal error', async () => {
    const daemon = await DaemonProcess.start(await tempDir(), await tempDir());
    const client = await daemon.connect();
    try {
      const { methods } = await client.call<{ methods: MethodDoc[] }>('rpc.discover');
      // Mostly what each method's published schema allows (so calls get past validation into the
      // session, the fold's rules and the lease rules), sometimes anything at all.
      const paramsFor = (method: MethodDoc) =>
        fc.oneof(
          {
            weight: 8,
            arbitrary: fc.record(
              Object.fromEntries(method.params.map((param) => [param.name, HINTS[param.name] ?? shaped(param.schema)])),
              { requiredKeys: method.params.filter((param) => param.required).map((param) => param.name) },
            ),
          },
          {
            weight: 1,
            arbitrary: fc.dictionary(
              fc.constantFrom('surface', 'payload', 'agent_id', 'epoch', ...method.params.map((param) => param.name)),
              fc.jsonValue({ maxDepth: 3 }),
              { maxKeys: 5 },
            ),
          },
          { weight: 1, arbitrary: fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined)) },
        );
      const request = fc.oneof(
        ...methods.map((method) => fc.record({ method: fc.constant(method.name), params: paramsFor(method) })),
        fc.record({ method: fc.constantFrom('sync.nothing', 'rpc.discover ', ''), params: fc.jsonValue({ maxDepth: 2 }) }),
      );
      let id = 0;
      await fc.assert(
        fc.asyncProperty(request, async ({ method, params }) => {
          id += 1;
          const answer = await rawCall(client, { jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });
          expect(answer.id).toBe(id);
          if ('error' in answer) {
            expect(Number.isInteger(answer.error.code)).toBe(true);
            expect(answer.error.code).not.toBe(-32603);
            expect(typeof answer.error.data?.code).toBe('string');
          } else expect('result' in answer).toBe(true);
        }),
        { numRuns: Number(process.env.FUZZ_RUNS ?? 300), ...(process.env.FUZZ_RUNS ? {} : { seed: 20261125 }) },
      );
      const stats = await client.call<{ rpc: { internal_errors: number } }>('sync.stats');
      expect(stats.rpc.internal_errors).toBe(0);
      await client.call('sync.append', { surface: 'knowledge', payload: { id: 'still-serving' } });
    } finally {
      await client.close();
      await daemon.stop();
    }
  });
});

type Schema = {
  type?: string;
  enum?: unknown[];
  const?: unknown;
  oneOf?: Schema[];
  items?: Schema;
  properties?: Record<string, Schema>;
  minimum?: number;
  maximum?: number;
  pattern?: string;
};
type MethodDoc = { name: string; params: Array<{ name: string; required?: boolean; schema: Schema }> };

const ids = fc.constantFrom('agent-1', 'agent-2', 'run-1', 'run-2', 'c1', 'k1', 'call_1', 'call_2', 'x', '../x', 'a/b', 'nul\u0000');
const surfaces = fc.constantFrom(
  'knowledge',
  'skill',
  'trajectory',
  'run',
  'routing',
  'declagent',
  'intent',
  'conversation',
  'registry:tools',
  'registry:',
  'bogus',
);
const roles = fc.constantFrom('user', 'assistant', 'tool', 'system', 'robot');
const toolCall = fc.record({ id: ids, name: fc.constantFrom('read_file', 'bad name'), input: fc.jsonValue({ maxDepth: 2 }) });
/** Payloads shaped like each surface's (so some pass the fold's rules), then anything with their field names. */
const payload = fc.oneof(
  fc.record({ id: ids, text: fc.string({ maxLength: 20 }), deleted: fc.boolean() }, { requiredKeys: ['id'] }),
  fc.record(
    {
      conversation_id: ids,
      role: roles,
      content: fc.string({ maxLength: 20 }),
      timestamp: fc.integer({ min: -1, max: 2e12 }),
      tool_calls: fc.array(toolCall, { maxLength: 2 }),
      tool_use_id: ids,
    },
    { requiredKeys: ['role', 'content'] },
  ),
  fc.record({
    id: ids,
    agent_id: ids,
    epoch: fc.integer({ min: 0, max: 3 }),
    status: fc.constantFrom('pending', 'committed', 'failed', 'lost'),
  }),
  fc.record({ route: ids, text: fc.string({ maxLength: 20 }) }),
  fc.dictionary(
    fc.constantFrom(
      'id',
      'text',
      'role',
      'content',
      'conversation_id',
      'timestamp',
      'tool_calls',
      'tool_use_id',
      'is_error',
      'agent_id',
      'run_id',
      'epoch',
      'status',
      'deleted',
      'route',
    ),
    fc.oneof(ids, roles, fc.integer({ min: -2, max: 5 }), fc.boolean(), fc.jsonValue({ maxDepth: 2 })),
    { maxKeys: 8 },
  ),
);

/** Parameters whose schema says less than their rules: values that often pass them. */
const HINTS: Record<string, fc.Arbitrary<unknown>> = {
  surface: surfaces,
  payload,
  timestamp: fc.oneof(fc.integer({ min: 0, max: 2e12 }), fc.constant('2026-11-25T03:00:00Z')),
  tool_calls: fc.oneof(
    { weight: 3, arbitrary: fc.constant([]) },
    { weight: 1, arbitrary: fc.array(toolCall, { minLength: 1, maxLength: 2 }) },
  ),
  content: fc.string({ maxLength: 40 }),
  scope: fc.oneof(
    { weight: 3, arbitrary: fc.constant('personal') },
    { weight: 1, arbitrary: fc.record({ org: ids }) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 1 }) },
  ),
};

/** Values shaped by a parameter's JSON Schema in the OpenRPC document. */
function shaped(schema: Schema): fc.Arbitrary<unknown> {
  if (schema.enum) return fc.constantFrom(...schema.enum);
  if ('const' in schema) return fc.constant(schema.const);
  if (schema.oneOf) return fc.oneof(...schema.oneOf.map(shaped));
  switch (schema.type) {
    case 'integer':
      return fc.oneof(
        fc.integer({ min: schema.minimum ?? -3, max: Math.min(schema.maximum ?? 10, (schema.minimum ?? 0) + 10) }),
        fc.constantFrom(schema.maximum ?? 1e9, 0, -1),
      );
    case 'boolean':
      return fc.boolean();
    case 'array':
      return fc.array(schema.items ? shaped(schema.items) : fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 });
    case 'object':
      return schema.properties
        ? fc.record(Object.fromEntries(Object.entries(schema.properties).map(([name, property]) => [name, shaped(property)])))
        : payload;
    default:
      return schema.pattern ? ids : fc.oneof(surfaces, ids, roles, fc.string({ maxLength: 20 }));
  }
}

type Answer = { id: unknown; result?: unknown } | { id: unknown; error: { code: number; message: string; data?: { code?: unknown } } };

/** Sends one request as raw text (params may be anything) and resolves with its answer. */
function rawCall(client: RpcClient, request: object): Promise<Answer> {
  return new Promise((resolve) => {
    const id = (request as { id: unknown }).id;
    const stop = client.onRaw((text) => {
      const answer = JSON.parse(text) as Answer;
      if (answer.id !== id) return;
      stop();
      resolve(answer);
    });
    client.sendRaw(JSON.stringify(request));
  });
}
