/**
 * Streamlined NTRU Prime 4591^761 (sntrup761), the encapsulation half only:
 * what the server of sntrup761x25519-sha512 does with the client's public
 * key (lib/hybridkex.ts). OpenSSH 9.0 to 9.8 offer that key exchange first,
 * and no maintained implementation exists for Node (OpenSSL has none,
 * @noble/post-quantum has ML-KEM only), so this follows the NTRU Prime
 * specification (round 3, the version OpenSSH ships) directly: Rq_decode of
 * the public key, a random short polynomial r, c = Round(h·r) encoded as
 * Rounded, a hash confirmation, and the session key Hash(1, Hash(3, r), c).
 * The real OpenSSH client decapsulates what it makes in the tests
 * (test/hybridkex.test.ts): a wrong byte anywhere fails its key exchange.
 *
 * Side channels: JavaScript gives no constant-time guarantees, and the
 * choice of r sorts random numbers. The key exchange is a hybrid: its
 * secret is hashed with an X25519 secret, so it is never weaker than
 * curve25519-sha256 alone.
 */
import { createHash, randomFillSync } from 'node:crypto';

/** The parameters of sntrup761: degree, modulus, weight of short polynomials. */
const P = 761;
const Q = 4591;
const W = 286;
/** (q - 1) / 2: coefficients of R/q are kept in [-Q12, Q12]. */
const Q12 = (Q - 1) / 2;

export const SNTRUP761_PUBLIC_KEY_BYTES = 1158;
/** The Rounded encoding of c, then the 32-byte hash confirmation. */
export const SNTRUP761_CIPHERTEXT_BYTES = 1039;
const ROUNDED_BYTES = 1007;
/** Small polynomials, 4 coefficients per byte. */
const SMALL_BYTES = (P + 3) >> 2;
const HASH_BYTES = 32;

/**
 * The specification's Encode: integers R[i] in [0, M[i]) into bytes, by
 * merging neighbours into one number below M[i]·M[i+1], emitting its low
 * bytes while that bound is 2^14 or more, and recursing on the halves.
 */
export function encode(values: readonly number[], moduli: readonly number[]): number[] {
  if (moduli.length === 0) return [];
  const out: number[] = [];
  if (moduli.length === 1) {
    let [r, m] = [values[0]!, moduli[0]!];
    while (m > 1) {
      out.push(r & 0xff);
      r >>>= 8;
      m = (m + 255) >>> 8;
    }
    return out;
  }
  const values2: number[] = [];
  const moduli2: number[] = [];
  for (let i = 0; i + 1 < moduli.length; i += 2) {
    let m = moduli[i]! * moduli[i + 1]!;
    let r = values[i]! + moduli[i]! * values[i + 1]!;
    while (m >= 16384) {
      out.push(r & 0xff);
      r >>>= 8;
      m = (m + 255) >>> 8;
    }
    values2.push(r);
    moduli2.push(m);
  }
  if (moduli.length % 2 === 1) {
    values2.push(values[moduli.length - 1]!);
    moduli2.push(moduli[moduli.length - 1]!);
  }
  return out.concat(encode(values2, moduli2));
}

/** The specification's Decode, the inverse of encode(): each R[i] reduced mod M[i], so that any bytes decode. */
export function decode(bytes: Uint8Array, moduli: readonly number[]): number[] {
  if (moduli.length === 0) return [];
  if (moduli.length === 1) {
    let r = 0;
    let factor = 1;
    for (let m = moduli[0]!, i = 0; m > 1; m = (m + 255) >>> 8, i++) {
      r += bytes[i]! * factor;
      factor *= 256;
    }
    return [r % moduli[0]!];
  }
  let k = 0;
  const bottom: [number, number][] = [];
  const moduli2: number[] = [];
  for (let i = 0; i + 1 < moduli.length; i += 2) {
    let m = moduli[i]! * moduli[i + 1]!;
    let r = 0;
    let t = 1;
    while (m >= 16384) {
      r += bytes[k++]! * t;
      t *= 256;
      m = (m + 255) >>> 8;
    }
    bottom.push([r, t]);
    moduli2.push(m);
  }
  if (moduli.length % 2 === 1) moduli2.push(moduli[moduli.length - 1]!);
  const upper = decode(bytes.subarray(k), moduli2);
  const values: number[] = [];
  for (let i = 0; i + 1 < moduli.length; i += 2) {
    const [low, t] = bottom[i / 2]!;
    const r = low + t * upper[i / 2]!;
    values.push(r % moduli[i]!, Math.floor(r / moduli[i]!) % moduli[i + 1]!);
  }
  if (moduli.length % 2 === 1) values.push(upper[upper.length - 1]!);
  return values;
}

const RQ_MODULI: readonly number[] = new Array<number>(P).fill(Q);
const ROUNDED_MODULI: readonly number[] = new Array<number>(P).fill((Q + 2) / 3);

/** A public key (an element of R/q, Rq_encode'd) as coefficients in [-Q12, Q12]. */
function decodePublicKey(bytes: Uint8Array): Int32Array {
  return Int32Array.from(decode(bytes, RQ_MODULI), (v) => v - Q12);
}

/** x mod Q, in [-Q12, Q12]. */
function freeze(x: number): number {
  const r = ((x % Q) + Q) % Q;
  return r > Q12 ? r - Q : r;
}

/**
 * h·r in R/q = (Z/q)[x]/(x^p - x - 1), r short (coefficients -1, 0, 1).
 * The plain product's coefficients stay below 761 · 2295 in magnitude, so
 * they are summed unreduced; x^(p+k) = x^(k+1) + x^k folds the top back.
 */
function multiplyShort(h: Int32Array, r: Int8Array): Int32Array {
  const product = new Int32Array(2 * P - 1);
  for (let i = 0; i < P; i++) {
    const ri = r[i]!;
    for (let j = 0; j < P; j++) product[i + j]! += ri * h[j]!;
  }
  for (let k = 2 * P - 2; k >= P; k--) {
    const top = freeze(product[k]!);
    product[k - P]! += top;
    product[k - P + 1]! += top;
  }
  const result = new Int32Array(P);
  for (let i = 0; i < P; i++) result[i] = freeze(product[i]!);
  return result;
}

/** A random short polynomial: exactly W coefficients ±1, uniform, the rest 0 (the specification's Short_random: sort tagged random words). */
function randomShort(): Int8Array {
  const words = randomFillSync(new Uint32Array(P));
  // Low two bits: 0 or 2 (then -1 or +1) for the first W, 1 (then 0) for the rest; the sort shuffles them.
  for (let i = 0; i < P; i++) words[i] = i < W ? words[i]! & ~1 : (words[i]! & ~3) | 1;
  words.sort();
  return Int8Array.from(words, (v) => (v & 3) - 1);
}

/** Small_encode: coefficients + 1, four to a byte, the last one alone. */
function encodeSmall(r: Int8Array): Buffer {
  const out = Buffer.alloc(SMALL_BYTES);
  for (let i = 0; i < P; i++) out[i >> 2]! |= (r[i]! + 1) << (2 * (i & 3));
  return out;
}

/** The specification's Hash_prefix: the first 32 bytes of SHA-512(b ‖ input). */
function hashPrefix(b: number, ...input: Uint8Array[]): Buffer {
  const hash = createHash('sha512').update(Uint8Array.of(b));
  for (const part of input) hash.update(part);
  return hash.digest().subarray(0, HASH_BYTES);
}

export interface Sntrup761Encapsulation {
  cipherText: Buffer;
  sharedSecret: Buffer;
}

/** Encapsulates a fresh 32-byte secret to `publicKey` (1158 bytes; any bytes decode, as in the specification). */
export function sntrup761Encapsulate(publicKey: Uint8Array): Sntrup761Encapsulation {
  if (publicKey.length !== SNTRUP761_PUBLIC_KEY_BYTES) throw new Error(`an sntrup761 public key has ${SNTRUP761_PUBLIC_KEY_BYTES} bytes, not ${publicKey.length}`);
  const r = randomShort();
  const rEncoded = encodeSmall(r);
  // Round: each coefficient to the nearest multiple of 3, then encoded as its third, shifted to [0, (q+2)/3).
  const hr = multiplyShort(decodePublicKey(publicKey), r);
  const rounded = Array.from(hr, (c) => (c - freeze3(c) + Q12) / 3);
  const encoded = Buffer.from(encode(rounded, ROUNDED_MODULI));
  if (encoded.length !== ROUNDED_BYTES) throw new Error(`sntrup761: a Rounded encoding of ${encoded.length} bytes`);
  const confirm = hashPrefix(2, hashPrefix(3, rEncoded), hashPrefix(4, publicKey));
  const cipherText = Buffer.concat([encoded, confirm]);
  return { cipherText, sharedSecret: hashPrefix(1, hashPrefix(3, rEncoded), cipherText) };
}

/** x mod 3 in {-1, 0, 1}. */
function freeze3(x: number): number {
  const r = ((x % 3) + 3) % 3;
  return r === 2 ? -1 : r;
}
