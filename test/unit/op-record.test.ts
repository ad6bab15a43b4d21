import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { canonicalize } from '../../src/oplog/canonical.js';
import { canonicalRecord, hashBody, opIdHolds, parseOpRecord, recordFromBody } from '../../src/oplog/op-record.js';
import { parseScope } from '../../src/oplog/scope.js';
import { parseSurface } from '../../src/oplog/surface.js';
import { parseAgentId, parseDeviceId } from '../../src/oplog/ids.js';
import { coreCrypto, TestDevice } from '../helpers/test-device.js';

describe('op record', () => {
  const device = new TestDevice('laptop', 1);
  const op = device.op('knowledge', { id: 'k1', text: 'hello' });

  it('accepts a well-formed record unchanged', () => {
    expect(parseOpRecord(JSON.parse(JSON.stringify(op)))).toEqual(op);
  });

  it.each([
    ['a missing field', { ...op, sig: undefined }],
    ['an extra field', { ...op, extra: 1 }],
    ['a malformed op id', { ...op, op_id: 'op-XYZ' }],
    ['a negative seq', { ...op, seq: -1 }],
    ['a fractional seq', { ...op, seq: 1.5 }],
    ['an unknown surface', { ...op, surface: 'kowledge' }],
    ['a bad scope', { ...op, scope: 'org' }],
    ['an array payload', { ...op, payload: [] }],
    ['an hlc with extra fields', { ...op, hlc: { ...op.hlc, x: 1 } }],
    ['a short signature', { ...op, sig: 'abc' }],
  ])('refuses %s with a named error', (_what, value) => {
    expect(() => parseOpRecord(JSON.parse(JSON.stringify(value)))).toThrow(expect.objectContaining({ code: 'invalid_record' }));
  });
});

describe('surfaces, scopes and ids', () => {
  it.each([
    'conversation',
    'knowledge',
    'skill',
    'trajectory',
    'run',
    'routing',
    'declagent',
    'intent',
    'registry:tools',
    'registry:a_b-9',
  ])('accepts the surface %s', (surface) => {
    expect(parseSurface(surface)).toBe(surface);
  });

  it.each(['Knowledge', 'registry:', 'registry:UPPER', 'registry:a/b', 'registry:' + 'x'.repeat(65), '', 'notes'])(
    'refuses the surface %j instead of defaulting it',
    (surface) => {
      expect(() => parseSurface(surface)).toThrow(expect.objectContaining({ code: 'invalid_surface' }));
    },
  );

  it('accepts personal and org scopes and refuses anything else', () => {
    expect(parseScope('personal')).toBe('personal');
    expect(parseScope({ org: 'acme' })).toEqual({ org: 'acme' });
    for (const bad of ['org', { org: '' }, { org: '../x' }, { org: 'a', extra: 1 }, null]) {
      expect(() => parseScope(bad)).toThrow(expect.objectContaining({ code: 'invalid_scope' }));
    }
  });

  it.each(['../x', 'a/b', 'a\u0000b', '', '.hidden', 'x'.repeat(200)])('refuses the path-like or oversize id %j', (id) => {
    expect(() => parseAgentId(id)).toThrow(expect.objectContaining({ code: 'invalid_id' }));
  });

  it('keeps device ids lowercase so they never collide on case-insensitive disks', () => {
    expect(parseDeviceId('laptop-2')).toBe('laptop-2');
    expect(() => parseDeviceId('Laptop')).toThrow(expect.objectContaining({ code: 'invalid_id' }));
  });
});

describe('canonical record text', () => {
  it('builds the same text from the body text as encoding the whole record, for any payload', () => {
    const device = new TestDevice('laptop', 1);
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (payload) => {
        const op = device.op('registry:x', { ...payload, id: 'k' });
        const fresh = { ...op };
        expect(recordFromBody(hashBody(fresh, coreCrypto).text, op.op_id, op.sig)).toBe(canonicalize(op));
        expect(opIdHolds(fresh, coreCrypto)).toBe(true);
        expect(canonicalRecord(fresh)).toBe(canonicalize(op));
      }),
      { numRuns: 300 },
    );
  });
});
