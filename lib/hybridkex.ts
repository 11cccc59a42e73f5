/**
 * mlkem768x25519-sha256, the post-quantum hybrid key exchange that OpenSSH
 * offers first since 9.9 and defaults to since 10.0
 * (draft-ietf-sshm-mlkem-hybrid-kex). From 10.1 on, OpenSSH's client warns on
 * every connection whose key exchange is not post-quantum, and ssh2 has none,
 * so the proxy adds this one on the client leg, where it is the server.
 *
 * This module is the server's half of the exchange, apart from ssh2: the
 * client's KEX_ECDH_INIT carries an ML-KEM-768 encapsulation key and an X25519
 * public key; the server encapsulates a secret to the first and answers with
 * the ciphertext and an X25519 public key of its own. The shared secret K is
 * SHA-256 of the ML-KEM secret and the X25519 secret, and goes into the
 * exchange hash and the key derivation as an SSH string, not as an mpint
 * (lib/ssh2internals.ts makes ssh2 run it).
 */
import { createHash, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';

export const MLKEM768X25519_SHA256 = 'mlkem768x25519-sha256';

const MLKEM768_PUBLIC_KEY_BYTES = 1184;
const X25519_KEY_BYTES = 32;

/** DER of an X25519 SubjectPublicKeyInfo up to the raw key (RFC 8410), so that Node imports a raw key. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

export interface HybridServerReply {
  /** What the server sends in KEX_ECDH_REPLY: the ML-KEM ciphertext, then its X25519 public key. */
  serverPublic: Buffer;
  /** K, 32 bytes, to be hashed as an SSH string. */
  sharedSecret: Buffer;
}

/**
 * The server's answer to a client's mlkem768x25519-sha256 KEX_ECDH_INIT
 * payload. Throws on a key of the wrong size, an ML-KEM key that FIPS 203's
 * modulus check rejects, or an X25519 key that gives an all-zero secret (as
 * OpenSSH refuses it), with a reason for the log, where ssh2 puts "Error
 * while computing DH secret (mlkem768x25519-sha256)" before it.
 */
export function mlkem768x25519ServerReply(clientPublic: Buffer): HybridServerReply {
  if (clientPublic.length !== MLKEM768_PUBLIC_KEY_BYTES + X25519_KEY_BYTES) {
    throw new Error(`the client's key (ML-KEM-768 and X25519) has ${clientPublic.length} bytes, not ${MLKEM768_PUBLIC_KEY_BYTES + X25519_KEY_BYTES}`);
  }
  const { cipherText, sharedSecret: kemSecret } = ml_kem768.encapsulate(clientPublic.subarray(0, MLKEM768_PUBLIC_KEY_BYTES));

  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const clientX25519 = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, clientPublic.subarray(MLKEM768_PUBLIC_KEY_BYTES)]), format: 'der', type: 'spki' });
  const ecdhSecret = x25519Secret(privateKey, clientX25519);

  const serverX25519 = publicKey.export({ format: 'der', type: 'spki' }).subarray(X25519_SPKI_PREFIX.length);
  return {
    serverPublic: Buffer.concat([cipherText, serverX25519]),
    sharedSecret: createHash('sha256').update(kemSecret).update(ecdhSecret).digest(),
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
