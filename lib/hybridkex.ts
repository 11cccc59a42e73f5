/**
 * The post-quantum hybrid key exchanges the proxy runs on the client leg,
 * where it is the server; ssh2 has none.
 *
 * - mlkem768x25519-sha256 (draft-ietf-sshm-mlkem-hybrid-kex): OpenSSH
 *   offers it first since 9.9 and defaults to it since 10.0. From 10.1 on,
 *   OpenSSH's client warns on every connection whose key exchange is not
 *   post-quantum.
 * - sntrup761x25519-sha512 (draft-josefsson-ntruprime-ssh; OpenSSH's name
 *   until 9.9 has "@openssh.com"): OpenSSH 9.0 to 9.8 offer it first, the
 *   client of Debian 12, Ubuntu 22.04 and 24.04, and macOS.
 *
 * This module is the server's half of both, apart from ssh2: the client's
 * KEX_ECDH_INIT carries a KEM public key and an X25519 public key; the
 * server encapsulates a secret to the first and answers with the ciphertext
 * and an X25519 public key of its own. The shared secret K is the method's
 * hash (SHA-256 or SHA-512, also its exchange hash) of the KEM secret and
 * the X25519 secret, and goes into the exchange hash and the key derivation
 * as an SSH string, not as an mpint (lib/ssh2internals.ts makes ssh2 run it).
 */
import { createHash, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { SNTRUP761_PUBLIC_KEY_BYTES, sntrup761Encapsulate } from './sntrup761.js';

export const MLKEM768X25519_SHA256 = 'mlkem768x25519-sha256';
export const SNTRUP761X25519_SHA512 = 'sntrup761x25519-sha512';

const X25519_KEY_BYTES = 32;

interface HybridMethod {
  /** The hash of K and of the exchange. */
  hash: 'sha256' | 'sha512';
  kem: string;
  kemPublicKeyBytes: number;
  encapsulate(publicKey: Uint8Array): { cipherText: Uint8Array; sharedSecret: Uint8Array };
}

const MLKEM768: Omit<HybridMethod, 'hash'> = { kem: 'ML-KEM-768', kemPublicKeyBytes: 1184, encapsulate: (key) => ml_kem768.encapsulate(key) };
const SNTRUP761: Omit<HybridMethod, 'hash'> = { kem: 'sntrup761', kemPublicKeyBytes: SNTRUP761_PUBLIC_KEY_BYTES, encapsulate: sntrup761Encapsulate };

/** The hybrid methods by name, in the order the proxy offers them. */
export const HYBRID_KEY_EXCHANGES: ReadonlyMap<string, HybridMethod> = new Map([
  [MLKEM768X25519_SHA256, { hash: 'sha256', ...MLKEM768 }],
  [SNTRUP761X25519_SHA512, { hash: 'sha512', ...SNTRUP761 }],
  [`${SNTRUP761X25519_SHA512}@openssh.com`, { hash: 'sha512', ...SNTRUP761 }],
]);

/** DER of an X25519 SubjectPublicKeyInfo up to the raw key (RFC 8410), so that Node imports a raw key. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

export interface HybridServerReply {
  /** What the server sends in KEX_ECDH_REPLY: the KEM ciphertext, then its X25519 public key. */
  serverPublic: Buffer;
  /** K, the method's hash (32 or 64 bytes), to be hashed as an SSH string. */
  sharedSecret: Buffer;
}

/**
 * The server's answer to a client's KEX_ECDH_INIT payload for the hybrid
 * `method` (a name in HYBRID_KEY_EXCHANGES). Throws on a key of the wrong
 * size, an ML-KEM key that FIPS 203's modulus check rejects, or an X25519
 * key that gives an all-zero secret (as OpenSSH refuses it), with a reason
 * for the log, where ssh2 puts "Error while computing DH secret (METHOD)"
 * before it.
 */
export function hybridServerReply(method: string, clientPublic: Buffer): HybridServerReply {
  const { hash, kem, kemPublicKeyBytes, encapsulate } = HYBRID_KEY_EXCHANGES.get(method)!;
  if (clientPublic.length !== kemPublicKeyBytes + X25519_KEY_BYTES) {
    throw new Error(`the client's key (${kem} and X25519) has ${clientPublic.length} bytes, not ${kemPublicKeyBytes + X25519_KEY_BYTES}`);
  }
  const { cipherText, sharedSecret: kemSecret } = encapsulate(clientPublic.subarray(0, kemPublicKeyBytes));

  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const clientX25519 = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, clientPublic.subarray(kemPublicKeyBytes)]), format: 'der', type: 'spki' });
  const ecdhSecret = x25519Secret(privateKey, clientX25519);

  const serverX25519 = publicKey.export({ format: 'der', type: 'spki' }).subarray(X25519_SPKI_PREFIX.length);
  return {
    serverPublic: Buffer.concat([cipherText, serverX25519]),
    sharedSecret: createHash(hash).update(kemSecret).update(ecdhSecret).digest(),
  };
}

/** The X25519 secret, refused if all zero (RFC 7748 §6.1), as OpenSSH refuses it. */
function x25519Secret(privateKey: KeyObject, publicKey: KeyObject): Buffer {
  try {
    const secret = diffieHellman({ privateKey, publicKey });
    if (!secret.every((byte) => byte === 0)) return secret;
  } catch {
    // OpenSSL 3 refuses an all-zero secret itself, saying only "failed during derivation".
  }
  throw new Error("the client's X25519 key gives an all-zero secret");
}
