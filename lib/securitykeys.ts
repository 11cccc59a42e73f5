/**
 * FIDO security keys (`ssh-keygen -t ed25519-sk` or `-t ecdsa-sk`) in
 * authorized_keys, and their login signatures, checked as sshd checks them.
 * ssh2 knows neither their key blobs nor their signatures.
 *
 * A security key does not sign the login's data itself but what a FIDO
 * authenticator signs: SHA-256(application) || flags || counter ||
 * SHA-256(data). The application ("ssh:" unless set at ssh-keygen) is part
 * of the public key; the flags say whether the user touched the key (user
 * presence) and whether the key verified the user (PIN or biometrics).
 * sshd requires presence unless the authorized_keys line says
 * `no-touch-required`, and verification when it says `verify-required`.
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { ecdsaP1363 } from './sshsignatures.js';
import { WireReader } from './sshwire.js';

export const SECURITY_KEY_TYPES = new Set(['sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com']);

/** Flags of a FIDO signature (OpenSSH's sk-api.h). */
const USER_PRESENT = 0x01;
const USER_VERIFIED = 0x04;

/** What an authorized_keys line asks of a security key's signature. */
export interface SecurityKeyPolicy {
  /** Unless the line says no-touch-required. */
  touchRequired: boolean;
  /** The line says verify-required. */
  verifyRequired: boolean;
}

export class SecurityKey {
  private constructor(
    readonly type: string,
    private readonly blob: Buffer,
    private readonly publicKey: KeyObject,
    /** SHA-256 of the application the key was made for. */
    private readonly applicationHash: Buffer,
  ) {}

  /** The key of an authorized_keys blob of a type in SECURITY_KEY_TYPES; undefined if it does not parse. */
  static parse(blob: Buffer): SecurityKey | undefined {
    const fields = new WireReader(blob).strings();
    const type = fields?.[0]?.toString('latin1');
    try {
      if (type === 'sk-ssh-ed25519@openssh.com' && fields!.length === 3 && fields![1]!.length === 32) {
        const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: fields![1]!.toString('base64url') }, format: 'jwk' });
        return new SecurityKey(type, blob, publicKey, createHash('sha256').update(fields![2]!).digest());
      }
      if (type === 'sk-ecdsa-sha2-nistp256@openssh.com' && fields!.length === 4 && fields![1]!.toString('latin1') === 'nistp256') {
        const point = fields![2]!;
        if (point.length !== 65 || point[0] !== 0x04) return undefined;
        const jwk = { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') };
        return new SecurityKey(type, blob, createPublicKey({ key: jwk, format: 'jwk' }), createHash('sha256').update(fields![3]!).digest());
      }
    } catch {
      // A point that is not on the curve.
    }
    return undefined;
  }

  /** The key as a client presents it (and ssh-keygen -l hashes it). */
  getPublicSSH(): Buffer {
    return this.blob;
  }

  /**
   * Why a login signature does not do; undefined when it does. `data` is
   * what the client signed; `signature` is in the form ssh2 hands it over
   * (lib/ssh2internals.ts, PublicKeyAuthRequest): the signature proper (64
   * bytes of Ed25519, or ECDSA's r and s as two SSH strings), then the
   * flags byte and the 32-bit counter.
   */
  refusal(data: Buffer, signature: Buffer, policy: SecurityKeyPolicy): string | undefined {
    const tail = signature.length - 5;
    let proper: Buffer | undefined;
    if (this.type === 'sk-ssh-ed25519@openssh.com') {
      if (tail === 64) proper = signature.subarray(0, 64);
    } else {
      const rs = tail > 0 ? new WireReader(signature.subarray(0, tail)).strings() : undefined;
      if (rs?.length === 2) proper = ecdsaP1363(rs[0]!, rs[1]!, 32);
    }
    if (proper === undefined) return 'the signature does not parse';
    const flagsAndCounter = signature.subarray(tail);
    const signed = Buffer.concat([this.applicationHash, flagsAndCounter, createHash('sha256').update(data).digest()]);
    let verified: boolean;
    try {
      verified =
        this.type === 'sk-ssh-ed25519@openssh.com'
          ? verify(null, signed, this.publicKey, proper)
          : verify('sha256', signed, { key: this.publicKey, dsaEncoding: 'ieee-p1363' }, proper);
    } catch {
      verified = false;
    }
    if (!verified) return 'signature does not verify';
    const flags = flagsAndCounter[0]!;
    if (policy.touchRequired && !(flags & USER_PRESENT)) return 'the security key was not touched (the key line does not say no-touch-required)';
    if (policy.verifyRequired && !(flags & USER_VERIFIED)) return 'the security key did not verify its user (the key line says verify-required)';
    return undefined;
  }
}
