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
 * The file is read at start, where a file that cannot be read, that others
 * may write, or that lists no usable key stops the daemon with the reason.
 * At a login it is read again if it changed (sshd reads it at every login),
 * so authorities are added and removed without a restart; if it has become
 * unusable, no certificate logs in through it until it is fixed.
 */
import fs from 'node:fs';
import { parseKeyList, type AuthorizedKey } from './authorizedkeys.js';
import { ConfigError } from './config.js';
import { SecurityKey } from './securitykeys.js';

/** Larger files are not read: a list of authorities is a few lines. */
const MAX_FILE_BYTES = 256 * 1024;

interface Reading {
  /** Identifies the file's state: device, inode, size, mode, owner, and the times of its last write and change (chmod, chown). */
  stamp: string;
  keys: AuthorizedKey[];
  /** Why lines, or the whole file, were not used; never a line's text. */
  problems: string[];
}

function stampOf(stat: fs.Stats): string {
  return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mode}:${stat.uid}:${stat.mtimeMs}:${stat.ctimeMs}`;
}

/** The file's keys, or why it gives none. */
function readFile(file: string): Reading {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return { stamp: code, keys: [], problems: [`${file}: not readable (${code})`] };
  }
  const stamp = stampOf(stat);
  const none = (problem: string): Reading => ({ stamp, keys: [], problems: [`${file}: ${problem}`] });
  if (!stat.isFile()) return none('not a regular file');
  // Whoever may write it may let anyone in as anyone.
  if ((stat.mode & 0o022) !== 0) return none(`refused, writable by others than its owner (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')})`);
  if (stat.uid !== 0 && stat.uid !== process.getuid?.()) return none('refused, it must belong to root or to the user the daemon runs as');
  if (stat.size > MAX_FILE_BYTES) return none(`refused, larger than ${MAX_FILE_BYTES} bytes`);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return none(`not readable (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const list = parseKeyList(text, file);
  // lib/certificates.ts verifies Ed25519, ECDSA and RSA signatures; a security key cannot sign a certificate here.
  const keys = list.keys.filter((entry) => !(entry.key instanceof SecurityKey));
  const problems = [...list.problems, ...list.keys.filter((entry) => !keys.includes(entry)).map((entry) => `${file} line ${entry.line}: skipped, security keys are not supported as certificate authorities`)];
  return { stamp, keys, problems };
}

export class TrustedUserCAs {
  private reading: Reading;

  private constructor(readonly file: string, reading: Reading) {
    this.reading = reading;
  }

  /** Reads `file`; throws with the reason when it cannot be used (no key at all counts). Problems with some lines are returned. */
  static open(file: string): { cas: TrustedUserCAs; problems: string[] } {
    const reading = readFile(file);
    if (reading.keys.length === 0) throw new ConfigError(`--trusted-user-ca-keys: ${reading.problems.join('; ') || `${file} lists no key`}`);
    return { cas: new TrustedUserCAs(file, reading), problems: reading.problems };
  }

  /** How many authorities the file lists now. */
  get size(): number {
    return this.reading.keys.length;
  }

  /**
   * The listed authority whose key is `blob`, or undefined; the file is
   * read again first if it changed since, and its problems then go to `log`.
   */
  find(blob: Buffer, log: (message: string) => void): AuthorizedKey | undefined {
    let stamp: string;
    try {
      const stat = fs.statSync(this.file);
      stamp = stampOf(stat);
    } catch (err) {
      stamp = (err as NodeJS.ErrnoException).code ?? 'error';
    }
    if (stamp !== this.reading.stamp) {
      this.reading = readFile(this.file);
      const { keys, problems } = this.reading;
      log(`--trusted-user-ca-keys: ${this.file} changed, ${keys.length} authorities${problems.length > 0 ? `; ${problems.join('; ')}` : ''}`);
    }
    return this.reading.keys.find((entry) => entry.blob.equals(blob));
  }
}
