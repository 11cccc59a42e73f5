/**
 * --revoked-keys: keys and certificates that no longer log in, as sshd's
 * RevokedKeys. The internal sshd never sees a user's key (the proxy logs in
 * there with its own), so only the daemon can refuse a revoked one.
 *
 * The file is a list of public keys, one per line, or an OpenSSH key
 * revocation list (`ssh-keygen -k`, PROTOCOL.krl). As with sshd, a key is
 * refused when it is listed, or for a certificate, when its key, its
 * authority or the certificate itself (by serial or key ID, under its
 * authority or any) is revoked; a KRL also revokes keys by SHA-1 or SHA-256
 * fingerprint. A file that cannot be used refuses every key until it is
 * fixed, as sshd refuses public key logins when it cannot read RevokedKeys.
 * It is read again when it changes (lib/watchedfile.ts).
 */
import { createHash } from 'node:crypto';
import { parseKeyList } from './authorizedkeys.js';
import { ConfigError } from './config.js';
import { WireReader } from './sshwire.js';
import { WatchedFile, type Reading } from './watchedfile.js';

/** Larger files are not read. A KRL of a million serials in ranges and bitmaps stays far below. */
const MAX_FILE_BYTES = 16 * 1024 * 1024;

const KRL_MAGIC = Buffer.from('SSHKRL\n\0', 'latin1');
const KRL_FORMAT_VERSION = 1;

/** PROTOCOL.krl's section types. */
const SECTION = { CERTIFICATES: 1, EXPLICIT_KEY: 2, FINGERPRINT_SHA1: 3, SIGNATURE: 4, FINGERPRINT_SHA256: 5, EXTENSION: 255 } as const;
const CERT_SECTION = { SERIAL_LIST: 0x20, SERIAL_RANGE: 0x21, SERIAL_BITMAP: 0x22, KEY_ID: 0x23, EXTENSION: 0x39 } as const;

/** What is known of a key offered for a login: its plain key, and for a certificate what identifies it. */
export interface OfferedKey {
  /** The key's blob (a certificate's certified key, not the certificate). */
  plain: Buffer;
  certificate?: { authority: Buffer; serial: bigint; keyId: string };
}

/** The certificates a KRL section revokes, of one authority (or of any, when `authority` is empty). */
interface RevokedCertificates {
  authority: Buffer;
  serials: Set<bigint>;
  ranges: [min: bigint, max: bigint][];
  bitmaps: [offset: bigint, bits: bigint][];
  keyIds: Set<string>;
}

/** What a file revokes, in either form. */
interface Revocations {
  /** Plain key blobs, base64 (a text list's lines, a KRL's explicit keys). */
  keys: Set<string>;
  sha1: Set<string>;
  sha256: Set<string>;
  certificates: RevokedCertificates[];
}

const emptyRevocations = (): Revocations => ({ keys: new Set(), sha1: new Set(), sha256: new Set(), certificates: [] });

/** An extension section's body: unknown ones are ignored unless critical, which refuses the KRL. */
function extensionProblem(data: Buffer): string | undefined {
  const reader = new WireReader(data);
  const name = reader.text();
  const critical = reader.byte();
  if (reader.string() === undefined || !reader.done()) return 'an extension does not parse';
  return critical !== 0 ? `it has a critical extension the proxy does not know (${/^[\w@.-]{1,64}$/.test(name!) ? name : '?'})` : undefined;
}

/** A certificates section (PROTOCOL.krl 2), added to `into`; a string says why the KRL is refused. */
function readCertificates(data: Buffer, into: Revocations): string | undefined {
  const reader = new WireReader(data);
  const authority = reader.string();
  if (authority === undefined || reader.string() === undefined) return 'a certificates section does not parse';
  const revoked: RevokedCertificates = { authority, serials: new Set(), ranges: [], bitmaps: [], keyIds: new Set() };
  while (!reader.done()) {
    const type = reader.byte();
    const body = reader.string();
    if (body === undefined) return 'a certificates section does not parse';
    const part = new WireReader(body);
    switch (type) {
      case CERT_SECTION.SERIAL_LIST:
        while (!part.done()) {
          const serial = part.uint64();
          if (serial === undefined) return 'a serial list does not parse';
          revoked.serials.add(serial);
        }
        break;
      case CERT_SECTION.SERIAL_RANGE: {
        const min = part.uint64();
        const max = part.uint64();
        if (max === undefined || !part.done() || min! > max) return 'a serial range does not parse';
        revoked.ranges.push([min!, max]);
        break;
      }
      case CERT_SECTION.SERIAL_BITMAP: {
        const offset = part.uint64();
        const bitmap = part.string();
        // An mpint: big-endian, and positive here (a first byte with its top bit set would be negative).
        if (bitmap === undefined || !part.done() || (bitmap.length > 0 && bitmap[0]! >= 0x80)) return 'a serial bitmap does not parse';
        revoked.bitmaps.push([offset!, bitmap.length === 0 ? 0n : BigInt(`0x${bitmap.toString('hex')}`)]);
        break;
      }
      case CERT_SECTION.KEY_ID: {
        const ids = part.strings();
        if (ids === undefined) return 'a key ID section does not parse';
        for (const id of ids) revoked.keyIds.add(id.toString('latin1'));
        break;
      }
      case CERT_SECTION.EXTENSION: {
        const problem = extensionProblem(body);
        if (problem !== undefined) return problem;
        break;
      }
      default:
        return `it has a certificates subsection of unknown type ${type}`;
    }
  }
  into.certificates.push(revoked);
  return undefined;
}

/** An OpenSSH KRL's revocations, or why it is refused (the daemon then refuses every key, as sshd would). */
export function parseKrl(data: Buffer): Revocations | string {
  if (!data.subarray(0, KRL_MAGIC.length).equals(KRL_MAGIC)) return 'not a KRL';
  const reader = new WireReader(data.subarray(KRL_MAGIC.length));
  const version = reader.uint32();
  reader.uint64(); // krl_version
  reader.uint64(); // generated_date
  reader.uint64(); // flags
  reader.string(); // reserved
  if (reader.string() === undefined) return 'the KRL header does not parse'; // comment
  if (version !== KRL_FORMAT_VERSION) return `KRL format version ${version} is not known`;
  const revocations = emptyRevocations();
  while (!reader.done()) {
    const type = reader.byte();
    if (type === SECTION.SIGNATURE) return 'signed KRLs are not supported (nor by OpenSSH 9.4 and later)';
    const body = reader.string();
    if (body === undefined) return 'a KRL section does not parse';
    const part = new WireReader(body);
    let problem: string | undefined;
    switch (type) {
      case SECTION.CERTIFICATES:
        problem = readCertificates(body, revocations);
        break;
      case SECTION.EXPLICIT_KEY:
      case SECTION.FINGERPRINT_SHA1:
      case SECTION.FINGERPRINT_SHA256: {
        const items = part.strings();
        if (items === undefined) {
          problem = 'a key section does not parse';
          break;
        }
        const set = type === SECTION.EXPLICIT_KEY ? revocations.keys : type === SECTION.FINGERPRINT_SHA1 ? revocations.sha1 : revocations.sha256;
        for (const item of items) set.add(item.toString('base64'));
        break;
      }
      case SECTION.EXTENSION:
        problem = extensionProblem(body);
        break;
      default:
        problem = `it has a section of unknown type ${type}`;
    }
    if (problem !== undefined) return problem;
  }
  return revocations;
}

/** A text list's keys (plain keys, one per line); a line that is no key is skipped, as sshd skips it. */
function parseTextList(file: string, content: Buffer): { revocations: Revocations; problems: string[] } {
  const list = parseKeyList(content.toString('utf8'), file);
  const revocations = emptyRevocations();
  for (const entry of list.keys) revocations.keys.add(entry.blob.toString('base64'));
  return { revocations, problems: list.problems };
}

/** Why `revocations` refuse `key`, or undefined. */
function revocationOf(revocations: Revocations, key: OfferedKey): string | undefined {
  const plainRevoked = (blob: Buffer) =>
    revocations.keys.has(blob.toString('base64')) ||
    revocations.sha256.has(createHash('sha256').update(blob).digest('base64')) ||
    revocations.sha1.has(createHash('sha1').update(blob).digest('base64'));
  if (plainRevoked(key.plain)) return 'the key is revoked';
  const certificate = key.certificate;
  if (certificate === undefined) return undefined;
  if (plainRevoked(certificate.authority)) return "the certificate's authority is revoked";
  for (const section of revocations.certificates) {
    if (section.authority.length > 0 && !section.authority.equals(certificate.authority)) continue;
    if (section.keyIds.has(certificate.keyId)) return 'the certificate is revoked by its key ID';
    // As OpenSSH: serial 0 is what a CA gives when it gives none, and is never revoked by serial.
    const serial = certificate.serial;
    if (serial === 0n) continue;
    const bySerial =
      section.serials.has(serial) ||
      section.ranges.some(([min, max]) => serial >= min && serial <= max) ||
      section.bitmaps.some(([offset, bits]) => serial >= offset && ((bits >> (serial - offset)) & 1n) === 1n);
    if (bySerial) return `the certificate is revoked by its serial (${serial})`;
  }
  return undefined;
}

interface RevokedList {
  revocations: Revocations;
  /** Lines of a text list that were skipped; never a line's text. */
  problems: string[];
  form: 'KRL' | 'key list';
}

function parseRevokedFile(file: string, content: Buffer): RevokedList | string {
  if (content.subarray(0, KRL_MAGIC.length).equals(KRL_MAGIC)) {
    const krl = parseKrl(content);
    return typeof krl === 'string' ? `refused, ${krl}` : { revocations: krl, problems: [], form: 'KRL' };
  }
  return { ...parseTextList(file, content), form: 'key list' };
}

/** A reading for the log. */
function summaryOf(reading: Reading<RevokedList>): string {
  if (reading.problem !== undefined) return `every key refused until it is fixed: ${reading.problem}`;
  const { problems, form } = reading.value;
  return `a ${form}${problems.length > 0 ? `; ${problems.join('; ')}` : ''}`;
}

export class RevokedKeys {
  private constructor(private readonly watched: WatchedFile<RevokedList>) {}

  get file(): string {
    return this.watched.file;
  }

  /** Reads `file`; throws a ConfigError with the reason when it cannot be used. Skipped lines of a key list are returned. */
  static open(file: string): { revoked: RevokedKeys; form: string; problems: string[] } {
    const watched = new WatchedFile(file, MAX_FILE_BYTES, (content) => parseRevokedFile(file, content));
    const reading = watched.current();
    if (reading.problem !== undefined) throw new ConfigError(`--revoked-keys: ${reading.problem}`);
    return { revoked: new RevokedKeys(watched), form: reading.value.form, problems: reading.value.problems };
  }

  /**
   * Why `key` may not log in, or undefined; the file is read again first if
   * it changed since, and `log` then says what it holds.
   */
  refusal(key: OfferedKey, log: (message: string) => void): string | undefined {
    const reading = this.watched.current((next) => log(`--revoked-keys: ${this.file} changed, ${summaryOf(next)}`));
    if (reading.problem !== undefined) return `--revoked-keys cannot be used (${reading.problem})`;
    return revocationOf(reading.value.revocations, key);
  }
}
