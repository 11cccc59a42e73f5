// The client's half of mlkem768x25519-sha256, written from the draft
// (draft-ietf-sshm-mlkem-hybrid-kex) apart from lib/hybridkex.ts, so that
// tests check the server's half against it.
import crypto from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';

/** DER of an X25519 SubjectPublicKeyInfo up to the raw key (RFC 8410). */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const MLKEM768_CIPHERTEXT_BYTES = 1088;

export interface MlkemClient {
  /** What the client sends in KEX_ECDH_INIT: its ML-KEM-768 encapsulation key, then its X25519 public key. */
  clientPublic: Buffer;
  /** K = SHA-256(ML-KEM secret || X25519 secret), from the server's KEX_ECDH_REPLY data. */
  sharedSecret(serverPublic: Buffer): Buffer;
}

export function mlkemClient(): MlkemClient {
  const kem = ml_kem768.keygen();
  const x25519 = crypto.generateKeyPairSync('x25519');
  const publicX25519 = x25519.publicKey.export({ format: 'der', type: 'spki' }).subarray(X25519_SPKI_PREFIX.length);
  return {
    clientPublic: Buffer.concat([kem.publicKey, publicX25519]),
    sharedSecret(serverPublic) {
      const kemSecret = ml_kem768.decapsulate(serverPublic.subarray(0, MLKEM768_CIPHERTEXT_BYTES), kem.secretKey);
      const serverX25519 = crypto.createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, serverPublic.subarray(MLKEM768_CIPHERTEXT_BYTES)]), format: 'der', type: 'spki' });
      const ecdhSecret = crypto.diffieHellman({ privateKey: x25519.privateKey, publicKey: serverX25519 });
      return crypto.createHash('sha256').update(kemSecret).update(ecdhSecret).digest();
    },
  };
}
