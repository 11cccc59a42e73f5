/**
 * OpenSSH user certificates (`ssh-keygen -s CA_KEY`), for key logins
 * through a `cert-authority` line of authorized_keys: a certificate signed
 * by the key on that line logs in, as sshd takes it (PROTOCOL.certkeys,
 * and sshd's checks in auth2-pubkey.c and auth-options.c).
 *
 * What is checked here: the certificate's form, that it is a user
 * certificate, its authority's signature (with the algorithms sshd's
 * CASignatureAlgorithms allows by default), its validity period, its
 * principals (the account's name, or one of the line's principals="..."),
 * its source-address critical option, and that it has no critical option
 * sshd would not know. Its force-command and permit-* extensions become
 * session options for the internal sshd, together with the line's own.
 */
import net from 'node:net';
import { readPublicKey, verifySignature, type PublicKey } from './sshsignatures.js';
import { WireReader, blobType } from './sshwire.js';

/** The certificate types taken, and the plain key type inside each. */
const CERTIFICATE_TYPES: Record<string, string> = {
  'ssh-ed25519-cert-v01@openssh.com': 'ssh-ed25519',
  'ecdsa-sha2-nistp256-cert-v01@openssh.com': 'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384-cert-v01@openssh.com': 'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521-cert-v01@openssh.com': 'ecdsa-sha2-nistp521',
  'ssh-rsa-cert-v01@openssh.com': 'ssh-rsa',
};

/** The publickey algorithms a client logs in with a certificate by: the certificate type each takes, and the signature algorithm it means. */
const CERTIFICATE_ALGORITHMS: Record<string, [certificate: string, signature: string]> = {
  'ssh-ed25519-cert-v01@openssh.com': ['ssh-ed25519-cert-v01@openssh.com', 'ssh-ed25519'],
  'ecdsa-sha2-nistp256-cert-v01@openssh.com': ['ecdsa-sha2-nistp256-cert-v01@openssh.com', 'ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384-cert-v01@openssh.com': ['ecdsa-sha2-nistp384-cert-v01@openssh.com', 'ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521-cert-v01@openssh.com': ['ecdsa-sha2-nistp521-cert-v01@openssh.com', 'ecdsa-sha2-nistp521'],
  'rsa-sha2-512-cert-v01@openssh.com': ['ssh-rsa-cert-v01@openssh.com', 'rsa-sha2-512'],
  'rsa-sha2-256-cert-v01@openssh.com': ['ssh-rsa-cert-v01@openssh.com', 'rsa-sha2-256'],
};

/**
 * The signature algorithm of a certificate login by publickey algorithm
 * `algorithm` with `blob`: undefined when `algorithm` is no certificate
 * algorithm, or not one for the blob's type (sshd refuses those too).
 */
export function certificateSignatureAlgorithm(algorithm: string, blob: Buffer): string | undefined {
  const entry = Object.hasOwn(CERTIFICATE_ALGORITHMS, algorithm) ? CERTIFICATE_ALGORITHMS[algorithm] : undefined;
  return entry !== undefined && entry[0] === blobType(blob) ? entry[1] : undefined;
}

const USER_CERTIFICATE = 1;

/** The permit-* extensions, and the authorized_keys flag each allows. */
export const PERMISSIONS: Record<string, string> = {
  'permit-pty': 'pty',
  'permit-port-forwarding': 'port-forwarding',
  'permit-agent-forwarding': 'agent-forwarding',
  'permit-X11-forwarding': 'x11-forwarding',
  'permit-user-rc': 'user-rc',
};

export interface UserCertificate {
  /** The certificate as the client presents it. */
  blob: Buffer;
  /** The certified key. */
  key: PublicKey;
  serial: bigint;
  keyId: string;
  /** Empty: valid for every principal (sshd takes that through a cert-authority line without principals=). */
  principals: string[];
  /** Seconds since the epoch: valid from validAfter, until before validBefore. */
  validAfter: bigint;
  validBefore: bigint;
  forceCommand?: string;
  /** The source-address critical option: addresses and CIDR networks. */
  sourceAddress?: string;
  /** The authorized_keys flags its permit-* extensions allow (pty, port-forwarding, ...). */
  permissions: Set<string>;
  /** The authority's key, to be found on a cert-authority line. */
  authority: PublicKey;
}

/** Whether a publickey blob is a certificate (by its type), whether or not it parses. */
export function isCertificate(blob: Buffer): boolean {
  const type = blobType(blob);
  return type !== undefined && Object.hasOwn(CERTIFICATE_TYPES, type);
}

/** The pairs of a certificate's critical options or extensions (string name, string data); undefined if they do not parse or repeat. */
function readPairs(field: Buffer): Map<string, Buffer> | undefined {
  const reader = new WireReader(field);
  const pairs = new Map<string, Buffer>();
  while (!reader.done()) {
    const name = reader.text();
    const data = reader.string();
    if (name === undefined || data === undefined || pairs.has(name)) return undefined;
    pairs.set(name, data);
  }
  return pairs;
}

/** The string inside an option's data; undefined if it is not exactly one string. */
function innerString(data: Buffer): string | undefined {
  const reader = new WireReader(data);
  const text = reader.text();
  return reader.done() ? text : undefined;
}

/**
 * A user certificate whose authority's signature verifies, or why it is
 * refused. The authority still has to be on a cert-authority line.
 */
export function parseUserCertificate(blob: Buffer): UserCertificate | string {
  const reader = new WireReader(blob);
  const type = reader.string()?.toString('latin1');
  if (type === undefined || !Object.hasOwn(CERTIFICATE_TYPES, type)) return 'not a certificate type the proxy takes';
  reader.string(); // nonce
  const key = readPublicKey(CERTIFICATE_TYPES[type]!, reader);
  const serial = reader.uint64();
  const kind = reader.uint32();
  const keyId = reader.text();
  const principals = reader.string();
  const validAfter = reader.uint64();
  const validBefore = reader.uint64();
  const critical = reader.string();
  const extensions = reader.string();
  reader.string(); // reserved
  const authorityBlob = reader.string();
  const signed = reader.consumed();
  const signature = reader.string();
  if (key === undefined) return 'the certified key does not parse';
  if (signature === undefined || !reader.done()) return 'the certificate does not parse';
  if (kind !== USER_CERTIFICATE) return 'not a user certificate';
  const principalList = new WireReader(principals!).strings();
  const criticalOptions = readPairs(critical!);
  const extensionList = readPairs(extensions!);
  if (principalList === undefined || criticalOptions === undefined || extensionList === undefined) return 'the certificate does not parse';

  const authorityReader = new WireReader(authorityBlob!);
  const authorityType = authorityReader.string()?.toString('latin1');
  const authority = authorityType === undefined ? undefined : readPublicKey(authorityType, authorityReader);
  if (authority === undefined || !authorityReader.done()) return "its authority's key is not one the proxy takes (Ed25519, ECDSA, RSA of 1024 bits or more)";
  if (!verifySignature(authority, signed, signature)) return "its authority's signature does not verify";

  const certificate: UserCertificate = {
    blob,
    key,
    serial: serial!,
    keyId: keyId!,
    principals: principalList.map((p) => p.toString('utf8')),
    validAfter: validAfter!,
    validBefore: validBefore!,
    permissions: new Set([...extensionList.keys()].filter((name) => Object.hasOwn(PERMISSIONS, name)).map((name) => PERMISSIONS[name]!)),
    authority,
  };
  for (const [name, data] of criticalOptions) {
    const value = innerString(data);
    if (name === 'force-command' && value !== undefined) certificate.forceCommand = value;
    else if (name === 'source-address' && value !== undefined) certificate.sourceAddress = value;
    // As sshd: a critical option it does not know refuses the certificate.
    else return `it has the critical option ${/^[\w@.-]{1,64}$/.test(name) ? name : '?'}, which the proxy does not know`;
  }
  return certificate;
}

/** Whether `address` is in the source-address list (addresses and CIDR networks, comma-separated); false if the list does not parse. */
export function sourceAddressAllows(list: string, address: string): boolean {
  const allowed = new net.BlockList();
  const family = (ip: string) => (net.isIPv4(ip) ? 'ipv4' : net.isIPv6(ip) ? 'ipv6' : undefined);
  for (const entry of list.split(',')) {
    const [ip, bits, more] = entry.split('/');
    const kind = family(ip!);
    if (kind === undefined || more !== undefined) return false;
    if (bits === undefined) {
      allowed.addAddress(ip!, kind);
      continue;
    }
    const prefix = Number(bits);
    if (!/^\d+$/.test(bits) || prefix > (kind === 'ipv4' ? 32 : 128)) return false;
    allowed.addSubnet(ip!, prefix, kind);
  }
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  const client = mapped ?? address;
  const kind = family(client);
  return kind !== undefined && allowed.check(client, kind);
}

/**
 * Why a certificate does not let `account` in from `address` at `now`
 * (ms), through a line with `principals` (its principals="..." or none);
 * undefined when it does.
 */
export function certificateRefusal(certificate: UserCertificate, account: string, principals: string | undefined, address: string, now: number): string | undefined {
  const seconds = BigInt(Math.floor(now / 1000));
  if (seconds < certificate.validAfter) return 'the certificate is not yet valid';
  if (seconds >= certificate.validBefore) return 'the certificate has expired';
  if (principals !== undefined) {
    const listed = principals.split(',');
    if (!certificate.principals.some((p) => listed.includes(p))) return 'the certificate names none of the principals of its line (principals=)';
  } else if (certificate.principals.length > 0 && !certificate.principals.includes(account)) {
    return `the certificate is not for ${account} (its principals)`;
  }
  if (certificate.sourceAddress !== undefined && !sourceAddressAllows(certificate.sourceAddress, address)) {
    return `the certificate is not valid from ${address} (source-address)`;
  }
  return undefined;
}
