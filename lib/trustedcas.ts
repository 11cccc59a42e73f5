/**
 * --trusted-user-ca-keys: certificate authorities trusted for every Hub
 * user, as sshd's TrustedUserCAKeys. A user certificate one of them signed
 * logs in the Hub user its principals name, with no authorized_keys at
 * all: how sites that issue short-lived certificates from their single
 * sign-on (step-ca, Vault, ssh-keygen -s) let their users in.
 *
 * The principals are matched against the Hub user name (the login name
 * without a server's suffix), not the unix account: the authority certifies
 * who someone is at the Hub, and the unix account is the proxy's mapping.
 * As with sshd's TrustedUserCAKeys, a certificate without principals logs
 * no one in. Validity, source-address, force-command and the permit-*
 * extensions are checked and applied as for a cert-authority line
 * (lib/certificates.ts).
 *
 * The file is read at start, where a file that cannot be used (or lists no
 * usable key) stops the daemon with the reason, and again at a login when
 * it changed (lib/watchedfile.ts). If it has become unusable, no
 * certificate logs in through it until it is fixed.
 */
import { parseKeyList, type AuthorizedKey } from './authorizedkeys.js';
import { ConfigError } from './config.js';
import { SecurityKey } from './securitykeys.js';
import { WatchedFile, type Reading } from './watchedfile.js';

/** Larger files are not read: a list of authorities is a few lines. */
const MAX_FILE_BYTES = 256 * 1024;

interface Authorities {
  keys: AuthorizedKey[];
  /** Why lines were not used; never a line's text. */
  problems: string[];
}

/** The authorities a file lists; lines with options, security keys and lines that are no keys are problems. */
function parseAuthorities(file: string, content: Buffer): Authorities {
  const list = parseKeyList(content.toString('utf8'), file);
  // lib/certificates.ts verifies Ed25519, ECDSA and RSA signatures; a security key cannot sign a certificate here.
  const keys = list.keys.filter((entry) => !(entry.key instanceof SecurityKey));
  const skipped = list.keys.filter((entry) => !keys.includes(entry)).map((entry) => `${file} line ${entry.line}: skipped, security keys are not supported as certificate authorities`);
  return { keys, problems: [...list.problems, ...skipped] };
}

/** A reading for the log: how many authorities, and the problems. */
function summaryOf(reading: Reading<Authorities>): string {
  if (reading.problem !== undefined) return `0 authorities; ${reading.problem}`;
  const { keys, problems } = reading.value;
  return `${keys.length} authorities${problems.length > 0 ? `; ${problems.join('; ')}` : ''}`;
}

export class TrustedUserCAs {
  private constructor(private readonly watched: WatchedFile<Authorities>) {}

  get file(): string {
    return this.watched.file;
  }

  /** Reads `file`; throws a ConfigError with the reason when it cannot be used (no key at all counts). Problems with some lines are returned. */
  static open(file: string): { cas: TrustedUserCAs; problems: string[] } {
    const watched = new WatchedFile(file, MAX_FILE_BYTES, (content) => parseAuthorities(file, content));
    const reading = watched.current();
    if (reading.problem !== undefined) throw new ConfigError(`--trusted-user-ca-keys: ${reading.problem}`);
    const { keys, problems } = reading.value;
    if (keys.length === 0) throw new ConfigError(`--trusted-user-ca-keys: ${problems.join('; ') || `${file} lists no key`}`);
    return { cas: new TrustedUserCAs(watched), problems };
  }

  /** How many authorities the file lists now. */
  get size(): number {
    return this.watched.current().value?.keys.length ?? 0;
  }

  /**
   * The listed authority whose key is `blob`, or undefined; the file is
   * read again first if it changed since, and `log` then says what it holds.
   */
  find(blob: Buffer, log: (message: string) => void): AuthorizedKey | undefined {
    const reading = this.watched.current((next) => log(`--trusted-user-ca-keys: ${this.file} changed, ${summaryOf(next)}`));
    return reading.value?.keys.find((entry) => entry.blob.equals(blob));
  }
}
