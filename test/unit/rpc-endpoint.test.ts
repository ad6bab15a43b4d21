import { describe, expect, it } from 'vitest';
import { RpcEndpoint } from '../../src/rpc/rpc-endpoint.js';
import { defineMethod, resultObject } from '../../src/rpc/method.js';
import { object } from '../../src/rpc/schema.js';

/**
 * An answer must become text before it can be sent. When it cannot — larger than V8's string
 * limit (JSON.stringify throws a RangeError, simulated here without building 512 MiB), or not
 * JSON at all (a bug) — the caller gets an error in the answer's place, and the daemon goes on.
 */
describe('answers that cannot be sent', () => {
  const errors: string[] = [];
  const method = (name: string, result: () => unknown) =>
    defineMethod({ name, summary: name, params: object({}), result: resultObject({}), handler: result });
  const endpoint = new RpcEndpoint(
    [
      method('test.huge', () => ({
        toJSON: () => {
          throw new RangeError('Invalid string length');
        },
      })),
      method('test.bigint', () => ({ n: 10n })),
      method('test.fine', () => ({ ok: true })),
    ],
    { error: (_fields, message) => errors.push(message) },
  );
  const connection = { id: 1, subscribed: false, surfaces: null };
  const call = (method: string, id: number) => ({ jsonrpc: '2.0', id, method });

  it('answers answer_too_large for one past the string limit, naming what to do', async () => {
    const answer = JSON.parse((await endpoint.handle(JSON.stringify(call('test.huge', 1)), connection))!) as unknown;
    expect(answer).toMatchObject({
      id: 1,
      error: { code: -32072, data: { code: 'answer_too_large' }, message: expect.stringContaining('ask for less') as unknown },
    });
  });

  it('answers an internal error for one that is not JSON, and logs it', async () => {
    const answer = JSON.parse((await endpoint.handle(JSON.stringify(call('test.bigint', 2)), connection))!) as unknown;
    expect(answer).toEqual({ jsonrpc: '2.0', id: 2, error: { code: -32603, message: 'Internal error', data: { code: 'internal' } } });
    expect(errors).toContain('an answer could not be serialized');
  });

  it('keeps the other answers of a batch', async () => {
    const text = JSON.stringify([call('test.fine', 3), call('test.huge', 4), call('test.fine', 5)]);
    const answers = JSON.parse((await endpoint.handle(text, connection))!) as Array<{
      id: number;
      result?: unknown;
      error?: { code: number };
    }>;
    expect(answers.map((a) => [a.id, a.result ?? a.error!.code])).toEqual([
      [3, { ok: true }],
      [4, -32072],
      [5, { ok: true }],
    ]);
  });
});
