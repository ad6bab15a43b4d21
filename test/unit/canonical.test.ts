import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalize } from '../../src/oplog/canonical.js';

/** RFC 8785 Appendix B: IEEE 754 doubles (as hex) and their canonical text. */
const RFC_NUMBERS: Array<[string, string]> = [
  ['0000000000000000', '0'],
  ['8000000000000000', '0'],
  ['0000000000000001', '5e-324'],
  ['8000000000000001', '-5e-324'],
  ['7fefffffffffffff', '1.7976931348623157e+308'],
  ['ffefffffffffffff', '-1.7976931348623157e+308'],
  ['4340000000000000', '9007199254740992'],
  ['c340000000000000', '-9007199254740992'],
  ['4430000000000000', '295147905179352830000'],
  ['44b52d02c7e14af5', '9.999999999999997e+22'],
  ['44b52d02c7e14af6', '1e+23'],
  ['44b52d02c7e14af7', '1.0000000000000001e+23'],
  ['444b1ae4d6e2ef4e', '999999999999999700000'],
  ['444b1ae4d6e2ef4f', '999999999999999900000'],
  ['444b1ae4d6e2ef50', '1e+21'],
  ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
  ['3eb0c6f7a0b5ed8d', '0.000001'],
  ['41b3de4355555553', '333333333.3333332'],
  ['41b3de4355555554', '333333333.33333325'],
  ['41b3de4355555555', '333333333.3333333'],
  ['41b3de4355555556', '333333333.3333334'],
  ['41b3de4355555557', '333333333.33333343'],
  ['becbf647612f3696', '-0.0000033333333333333333'],
  ['43143ff3c1cb0959', '1424953923781206.2'],
];

function double(hex: string): number {
  return Buffer.from(hex, 'hex').readDoubleBE(0);
}

describe('canonical encoding (RFC 8785)', () => {
  it.each(RFC_NUMBERS)('serializes the double 0x%s as %s', (hex, expected) => {
    expect(canonicalize(double(hex))).toBe(expected);
  });

  it('reproduces the RFC 8785 §3.2.4 example byte for byte', () => {
    const input = JSON.parse(
      '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],' +
        '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}',
    ) as unknown;
    expect(canonicalize(input)).toBe(
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });

  it('sorts properties by UTF-16 code units (RFC 8785 §3.2.3)', () => {
    const input = JSON.parse(
      '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One",' +
        '"\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control","\\u00f6":"Latin Small Letter O With Diaeresis"}',
    ) as Record<string, string>;
    expect(canonicalize(input)).toBe(
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
        '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    );
  });

  it('escapes control characters in short or lowercase \\u form and leaves other text alone', () => {
    expect(canonicalize('\b\t\n\f\r\u0001\u001f "\\/é😀')).toBe('"\\b\\t\\n\\f\\r\\u0001\\u001f \\"\\\\/é😀"');
  });

  it.each([
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['a lone surrogate', '\ud800x'],
    ['undefined', undefined],
    ['a function', () => 1],
    ['a Date', new Date(0)],
    ['a nested lone surrogate key', { ['\udc00']: 1 }],
  ])('refuses %s with invalid_json', (_name, value) => {
    expect(() => canonicalize(value)).toThrow(expect.objectContaining({ code: 'invalid_json' }));
  });

  it('decodes back to the same value and is idempotent, for any JSON value', () => {
    fc.assert(
      fc.property(fc.jsonValue({ noUnicodeString: false }), (value) => {
        const text = canonicalize(value);
        const decoded = JSON.parse(text) as unknown;
        expect(decoded).toEqual(JSON.parse(JSON.stringify(value)));
        expect(canonicalize(decoded)).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it('orders members by UTF-16 code units, as Array.prototype.sort does, for small and large objects', () => {
    const wellFormed = fc.string({ unit: 'binary' }).filter((key) => !/\p{Cs}/u.test(key));
    fc.assert(
      fc.property(fc.uniqueArray(wellFormed, { maxLength: 40 }), (keys) => {
        const object: Record<string, number> = Object.fromEntries(keys.map((key, i) => [key, i]));
        const order = Object.keys(object).sort();
        expect(canonicalize(object)).toBe(`{${order.map((key) => `${JSON.stringify(key)}:${object[key]}`).join(',')}}`);
      }),
      { numRuns: 300 },
    );
  });

  it('does not depend on the order properties were inserted in', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (dict) => {
        const reversed = Object.fromEntries(Object.entries(dict).reverse());
        expect(canonicalize(reversed)).toBe(canonicalize(dict));
      }),
      { numRuns: 300 },
    );
  });
});
