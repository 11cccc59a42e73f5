/**
 * Plain SSH public keys and signatures, checked with node's crypto: the
 * keys inside user certificates and the signatures of their certificate
 * authorities (lib/certificates.ts), which ssh2 does not check, and the
 * ECDSA signatures of security keys (lib/securitykeys.ts).
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { WireReader, sshString } from './sshwire.js';

/** OpenSSH's RequiredRSASize default. */
export const MIN_RSA_BITS = 1024;

/** The signature algorithms of each key type, as sshd takes them by default (no DSA, no RSA with SHA-1), and their hashes. */
const SIGNATURE_ALGORITHMS: Record<string, Record<string, string | null>> = {
  'ssh-ed25519': { 'ssh-ed25519': null },
  'ecdsa-sha2-nistp256': { 'ecdsa-sha2-nistp256': 'sha256' },
  'ecdsa-sha2-nistp384': { 'ecdsa-sha2-nistp384': 'sha384' },
  'ecdsa-sha2-nistp521': { 'ecdsa-sha2-nistp521': 'sha512' },
  'ssh-rsa': { 'rsa-sha2-512': 'sha512', 'rsa-sha2-256': 'sha256' },
};

/** ECDSA curves: SSH's name, the JWK name, and the byte length of a coordinate. */
const CURVES: Record<string, { jwk: string; bytes: number }> = {
  nistp256: { jwk: 'P-256', bytes: 32 },
  nistp384: { jwk: 'P-384', bytes: 48 },
  nistp521: { jwk: 'P-521', bytes: 66 },
};

export interface PublicKey {
  /** ssh-ed25519, ecdsa-sha2-nistp256, ..., ssh-rsa. */
  type: string;
  /** The key in SSH wire format. */
  blob: Buffer;
  key: KeyObject;
  /** ECDSA: the coordinate length; 0 for others. */
  coordinateBytes: number;
}

/**
 * Reads the fields of a `type` key (after its type string, as in a key
 * blob or a certificate) from `reader`. Undefined if they do not parse, or
 * for another type, or RSA under MIN_RSA_BITS.
 */
export function readPublicKey(type: string, reader: WireReader): PublicKey | undefined {
  try {
    if (type === 'ssh-ed25519') {
      const x = reader.string();
      if (x?.length !== 32) return undefined;
      const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: x.toString('base64url') }, format: 'jwk' });
      return { type, blob: Buffer.concat([sshString(type), sshString(x)]), key, coordinateBytes: 0 };
    }
    if (type.startsWith('ecdsa-sha2-')) {
      const curveName = reader.string()?.toString('latin1');
      const point = reader.string();
      const curve = curveName === undefined ? undefined : CURVES[curveName];
      if (curve === undefined || `ecdsa-sha2-${curveName}` !== type || point?.length !== 1 + 2 * curve.bytes || point[0] !== 4) return undefined;
      const jwk = { kty: 'EC', crv: curve.jwk, x: point.subarray(1, 1 + curve.bytes).toString('base64url'), y: point.subarray(1 + curve.bytes).toString('base64url') };
      const key = createPublicKey({ key: jwk, format: 'jwk' });
      return { type, blob: Buffer.concat([sshString(type), sshString(curveName!), sshString(point)]), key, coordinateBytes: curve.bytes };
    }
    if (type === 'ssh-rsa') {
      const e = reader.string();
      const n = reader.string();
      if (e === undefined || n === undefined) return undefined;
      const key = createPublicKey({ key: { kty: 'RSA', e: unsigned(e).toString('base64url'), n: unsigned(n).toString('base64url') }, format: 'jwk' });
      if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) return undefined;
      return { type, blob: Buffer.concat([sshString(type), sshString(e), sshString(n)]), key, coordinateBytes: 0 };
    }
  } catch {
    // A point off its curve, an RSA key node refuses.
  }
  return undefined;
}

/** A plain public key blob (string type, then its fields); undefined if it does not parse in full. */
export function parsePublicKey(blob: Buffer): PublicKey | undefined {
  const reader = new WireReader(blob);
  const type = reader.string()?.toString('latin1');
  const key = type === undefined ? undefined : readPublicKey(type, reader);
  return key && reader.done() ? key : undefined;
}

/** An mpint's magnitude, without the sign byte. */
function unsigned(mpint: Buffer): Buffer {
  let start = 0;
  while (start < mpint.length - 1 && mpint[start] === 0) start++;
  return mpint.subarray(start);
}

/** ECDSA's (r, s), SSH mpints, as node's 'ieee-p1363' form: each padded to the coordinate length. Undefined if one is longer. */
export function ecdsaP1363(r: Buffer, s: Buffer, bytes: number): Buffer | undefined {
  const out = Buffer.alloc(2 * bytes);
  for (const [i, n] of [r, s].entries()) {
    const magnitude = unsigned(n);
    if (magnitude.length > bytes) return undefined;
    magnitude.copy(out, (i + 1) * bytes - magnitude.length);
  }
  return out;
}

/**
 * Whether `signature`, in SSH's form (string algorithm, string signature),
 * is `key`'s over `data`, made with an algorithm of the key's type; with
 * `algorithm`, with that one only.
 */
export function verifySignature(key: PublicKey, data: Buffer, signature: Buffer, algorithm?: string): boolean {
  const reader = new WireReader(signature);
  const name = reader.string()?.toString('latin1');
  const proper = reader.string();
  if (name === undefined || proper === undefined || !reader.done() || (algorithm !== undefined && name !== algorithm)) return false;
  const hashes = SIGNATURE_ALGORITHMS[key.type]!;
  if (!Object.hasOwn(hashes, name)) return false;
  const hash = hashes[name] ?? null;
  try {
    if (key.coordinateBytes > 0) {
      const rs = new WireReader(proper);
      const [r, s] = [rs.string(), rs.string()];
      const p1363 = r && s && rs.done() ? ecdsaP1363(r, s, key.coordinateBytes) : undefined;
      return p1363 !== undefined && verify(hash, data, { key: key.key, dsaEncoding: 'ieee-p1363' }, p1363);
    }
    return verify(hash, data, key.key, proper);
  } catch {
    return false;
  }
}
