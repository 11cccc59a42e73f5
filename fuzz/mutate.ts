/**
 * Byte-level mutations of a valid input, AFL-style: bit flips, interesting
 * values, truncation, extension, splices and, above all, length fields set to
 * values that break parsers (0, 1, len±1, 2^31-1, 2^32-1, ...).
 */
import type { Rng } from './rng.js';

const INTERESTING_8 = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x14, 0x15, 0x1e, 0x32, 0x3c, 0x3d];
const INTERESTING_32 = [
  0, 1, 2, 3, 4, 5, 8, 16, 31, 32, 33, 64, 127, 128, 255, 256, 4096, 32767, 32768, 34999, 35000, 35001, 65535, 65536,
  0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
];

export type MutationOp =
  | 'flip-bits'
  | 'set-byte'
  | 'set-u32'
  | 'length-field'
  | 'truncate'
  | 'extend'
  | 'insert'
  | 'delete'
  | 'duplicate-range'
  | 'randomize-range'
  | 'zero-range'
  | 'swap-ranges';

const OPS: [MutationOp, number][] = [
  ['flip-bits', 4],
  ['set-byte', 3],
  ['set-u32', 2],
  ['length-field', 6],
  ['truncate', 3],
  ['extend', 2],
  ['insert', 2],
  ['delete', 2],
  ['duplicate-range', 1],
  ['randomize-range', 2],
  ['zero-range', 1],
  ['swap-ranges', 1],
];

/**
 * Offsets in `buf` that plausibly hold a uint32 length: the value fits in
 * what follows. SSH strings, name-lists and mpints all start like that.
 */
export function lengthFields(buf: Buffer, from = 0): number[] {
  const found: number[] = [];
  for (let p = from; p + 4 <= buf.length; p++) {
    const v = buf.readUInt32BE(p);
    if (v <= buf.length - p - 4 && v < 65536) found.push(p);
  }
  return found;
}

export interface Mutated {
  out: Buffer;
  ops: string[];
}

/**
 * Applies 1-3 mutations. `keepType` leaves byte 0 (the message type) alone
 * most of the time, so that mutated payloads reach the right parser.
 */
export function mutate(rng: Rng, input: Buffer, keepType = true): Mutated {
  let buf = Buffer.from(input);
  const ops: string[] = [];
  const n = rng.weighted([
    [1, 6],
    [2, 3],
    [3, 1],
  ] as const);
  for (let i = 0; i < n; i++) {
    const op = rng.weighted(OPS);
    const lo = keepType && buf.length > 1 && !rng.chance(0.05) ? 1 : 0;
    const pos = () => (buf.length > lo ? rng.range(lo, buf.length - 1) : 0);
    switch (op) {
      case 'flip-bits': {
        if (buf.length === 0) break;
        const bits = rng.pick([1, 1, 1, 2, 4, 8]);
        for (let b = 0; b < bits; b++) {
          const p = pos();
          buf[p]! ^= 1 << rng.int(8);
        }
        ops.push(`flip-bits(${bits})`);
        break;
      }
      case 'set-byte': {
        if (buf.length === 0) break;
        const p = pos();
        buf[p] = rng.pick(INTERESTING_8);
        ops.push(`set-byte@${p}`);
        break;
      }
      case 'set-u32': {
        if (buf.length < 4 + lo) break;
        const p = rng.range(lo, buf.length - 4);
        buf.writeUInt32BE(rng.pick(INTERESTING_32), p);
        ops.push(`set-u32@${p}`);
        break;
      }
      case 'length-field': {
        const fields = lengthFields(buf, lo);
        if (fields.length === 0) break;
        const p = rng.pick(fields);
        const v = buf.readUInt32BE(p);
        const next = rng.weighted([
          [rng.pick(INTERESTING_32), 4],
          [v + 1, 2],
          [v - 1, 2],
          [buf.length - p - 4 + rng.range(1, 8), 1],
          [v * 2, 1],
        ] as const);
        buf.writeUInt32BE(next >>> 0, p);
        ops.push(`length@${p}:${v}->${next >>> 0}`);
        break;
      }
      case 'truncate': {
        const at = rng.range(0, buf.length);
        buf = buf.subarray(0, at);
        ops.push(`truncate@${at}`);
        break;
      }
      case 'extend': {
        const extra = rng.chance(0.7) ? rng.bytes(rng.size(512)) : Buffer.alloc(rng.size(30000), rng.pick(INTERESTING_8));
        buf = Buffer.concat([buf, extra]);
        ops.push(`extend+${extra.length}`);
        break;
      }
      case 'insert': {
        const p = pos();
        const extra = rng.bytes(rng.range(1, 16));
        buf = Buffer.concat([buf.subarray(0, p), extra, buf.subarray(p)]);
        ops.push(`insert@${p}+${extra.length}`);
        break;
      }
      case 'delete': {
        if (buf.length <= lo) break;
        const p = pos();
        const len = rng.range(1, Math.min(16, buf.length - p));
        buf = Buffer.concat([buf.subarray(0, p), buf.subarray(p + len)]);
        ops.push(`delete@${p}-${len}`);
        break;
      }
      case 'duplicate-range': {
        if (buf.length <= lo) break;
        const p = pos();
        const len = rng.range(1, Math.min(64, buf.length - p));
        const copies = rng.pick([1, 2, 8, 100]);
        buf = Buffer.concat([buf.subarray(0, p + len), ...Array<Buffer>(copies).fill(buf.subarray(p, p + len)), buf.subarray(p + len)]);
        ops.push(`dup@${p}-${len}x${copies}`);
        break;
      }
      case 'randomize-range':
      case 'zero-range': {
        if (buf.length <= lo) break;
        const p = pos();
        const len = rng.range(1, Math.min(32, buf.length - p));
        const fill = op === 'zero-range' ? Buffer.alloc(len) : rng.bytes(len);
        fill.copy(buf, p);
        ops.push(`${op}@${p}-${len}`);
        break;
      }
      case 'swap-ranges': {
        if (buf.length < lo + 4) break;
        const len = rng.range(1, Math.max(1, Math.floor((buf.length - lo) / 4)));
        const a = rng.range(lo, buf.length - len);
        const b = rng.range(lo, buf.length - len);
        const ca = Buffer.from(buf.subarray(a, a + len));
        buf.copy(buf, a, b, b + len);
        ca.copy(buf, b);
        ops.push(`swap@${a},${b}-${len}`);
        break;
      }
    }
  }
  if (ops.length === 0 || buf.equals(input)) {
    // Make sure something changed.
    buf = Buffer.concat([buf, Buffer.of(rng.u32() & 0xff)]);
    ops.push('append-byte');
  }
  return { out: buf, ops };
}
