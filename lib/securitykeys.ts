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
import { createHash, verify, type KeyObject } from 'node:crypto';
import { ecdsaP1363, readPublicKey } from './sshsignatures.js';
import { WireReader } from './sshwire.js';

/** The security key types, and the plain key type whose fields each holds before its application. */
const PLAIN_TYPES: Record<string, string> = {
  'sk-ssh-ed25519@openssh.com': 'ssh-ed25519',
  'sk-ecdsa-sha2-nistp256@openssh.com': 'ecdsa-sha2-nistp256',
};

export const SECURITY_KEY_TYPES = new Set(Object.keys(PLAIN_TYPES));

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
    const reader = new WireReader(blob);
    const type = reader.string()?.toString('latin1');
    // The plain key's fields, then the application.
    const plain = type !== undefined && Object.hasOwn(PLAIN_TYPES, type) ? PLAIN_TYPES[type] : undefined;
    const key = plain === undefined ? undefined : readPublicKey(plain, reader);
    const application = reader.string();
    if (key === undefined || application === undefined || !reader.done()) return undefined;
    return new SecurityKey(type!, blob, key.key, createHash('sha256').update(application).digest());
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
