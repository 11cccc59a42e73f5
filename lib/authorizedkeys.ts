/**
 * Login with a key (--authorized-keys-file): the public keys a unix account
 * lists in its authorized_keys, read with the rules of sshd's StrictModes.
 *
 * The daemon reads the file as root, so it checks what sshd checks before
 * it trusts one (auth_secure_path): the file and every folder above it, up
 * to the account's home, belong to the account or to root and are writable
 * by no one else. Otherwise anyone who can write there could add a key.
 *
 * A line with options (`command=`, `restrict`, `no-pty`, ...) is skipped:
 * the proxy relays the session without reading it, so it could enforce none
 * of them, and a key meant to be restricted must not log in unrestricted.
 * The exception is `from=` alone, which concerns only the client's address.
 * Problems are reported by line number and kind only: the daemon may be
 * made to read a file that is not a key list, whose lines must not reach
 * the log.
 */
import { constants as fsConstants, promises as fsp } from 'node:fs';
import path from 'node:path';
import { parseKey, type ParsedKey } from './ssh2internals.js';

/** The key types a line may hold, as sshd's defaults accept them (no DSA, no SHA-1 RSA signatures). */
const KEY_TYPES = new Set(['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-rsa']);

/** OpenSSH's RequiredRSASize default. */
const MIN_RSA_BITS = 1024;

/** Larger files are not read: thousands of keys fit in far less. */
const MAX_FILE_BYTES = 1024 * 1024;

export interface AuthorizedKey {
  key: ParsedKey;
  /** The key in SSH wire format, as a client presents it. */
  blob: Buffer;
  /** 1-based, for the log. */
  line: number;
  /** The line's from="pattern-list": the addresses the key may log in from (lib/frompatterns.ts). */
  from?: string;
}

export interface AuthorizedKeys {
  keys: AuthorizedKey[];
  /** Why lines or the whole file were not used, for the log; never a line's text. */
  problems: string[];
}

/** The unix account whose keys are read. */
export interface KeyOwner {
  name: string;
  uid: number;
  home: string;
}

/** Where a target's keys are read, for an upstream that can say. */
export interface AuthorizedKeysSource {
  /** Keys that may log in as `hubUser` without a token. */
  authorizedKeys(hubUser: string): Promise<AuthorizedKeys>;
}

/**
 * An AuthorizedKeysFile pattern for `owner`, as sshd expands it: `%h` the
 * home, `%u` the user name, `%%` a percent sign; a relative path is taken
 * from the home.
 */
export function authorizedKeysPath(pattern: string, owner: Pick<KeyOwner, 'name' | 'home'>): string {
  const expanded = pattern.replace(/%([%hu])/g, (_m, c: string) => (c === 'h' ? owner.home : c === 'u' ? owner.name : '%'));
  return path.resolve(owner.home, expanded);
}

/** Why `pattern` cannot be an --authorized-keys-file value, or undefined. */
export function authorizedKeysPatternProblem(pattern: string): string | undefined {
  if (pattern.trim() === '') return '--authorized-keys-file needs a path, e.g. .ssh/authorized_keys';
  if (/%[^%hu]|%$/.test(pattern)) return `--authorized-keys-file knows %h, %u and %%, not ${pattern.match(/%[^%hu]?/)![0]}`;
  return undefined;
}

/** The first string of an SSH wire-format key: its type. */
function blobType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  return length <= blob.length - 4 ? blob.toString('latin1', 4, 4 + length) : undefined;
}

/** The modulus size of an ssh-rsa blob (string type, mpint e, mpint n). */
function rsaBits(blob: Buffer): number {
  let offset = 0;
  const next = (): Buffer => {
    const length = blob.readUInt32BE(offset);
    const value = blob.subarray(offset + 4, offset + 4 + length);
    offset += 4 + length;
    return value;
  };
  next();
  next();
  const n = next();
  let start = 0;
  while (start < n.length && n[start] === 0) start++;
  if (start === n.length) return 0;
  return (n.length - start - 1) * 8 + (32 - Math.clz32(n[start]!));
}

/**
 * Where the first of `stops` outside double quotes is in `text`, from
 * `start` (the text's length if none): quoted option values may hold
 * blanks and commas, and \\" inside them.
 */
function unquotedIndex(text: string, start: number, stops: string): number {
  let quoted = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\' && quoted) i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && stops.includes(c)) return i;
  }
  return text.length;
}

/** The start of a line up to its first unquoted blank: a key type, or the options before one. */
function firstField(line: string): string {
  return line.slice(0, unquotedIndex(line, 0, ' \t'));
}

/** The options of an options field: `command="x,y",no-pty` gives command (x,y) and no-pty. */
function parseOptions(field: string): { name: string; value?: string }[] {
  const options: { name: string; value?: string }[] = [];
  for (let start = 0; start <= field.length; ) {
    const end = unquotedIndex(field, start, ',');
    const option = field.slice(start, end);
    const eq = option.indexOf('=');
    const name = (eq < 0 ? option : option.slice(0, eq)).toLowerCase();
    const raw = eq < 0 ? undefined : option.slice(eq + 1);
    // sshd takes option values quoted, with \" for a quote inside.
    const value = raw !== undefined && /^".*"$/s.test(raw) ? raw.slice(1, -1).replace(/\\"/g, '"') : undefined;
    options.push({ name, value });
    start = end + 1;
  }
  return options;
}

/** Option names for the log: only those of a line that holds a key get there; still, no odd characters. */
function optionNames(options: { name: string }[]): string {
  return options.map(({ name }) => (/^[a-z0-9@._-]{1,40}$/.test(name) ? name : '?')).join(', ');
}

/** A first field that names a key type, whether or not the proxy takes it. */
function isKeyType(field: string): boolean {
  return KEY_TYPES.has(field) || field === 'ssh-dss' || field.startsWith('sk-') || field.endsWith('-cert-v01@openssh.com');
}

/** The keys of an authorized_keys text; `source` names it in problems. */
export function parseAuthorizedKeys(text: string, source: string): AuthorizedKeys {
  const keys: AuthorizedKey[] = [];
  const problems: string[] = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    let rest = lines[index]!.trim();
    if (rest === '' || rest.startsWith('#')) continue;
    const skip = (why: string) => problems.push(`${source} line ${index + 1}: skipped, ${why}`);
    // As sshd reads a line: a key, else options and then a key.
    let type = firstField(rest);
    let options: { name: string; value?: string }[] | undefined;
    if (!isKeyType(type)) {
      options = parseOptions(type);
      rest = rest.slice(type.length).trimStart();
      type = firstField(rest);
    }
    if (!isKeyType(type)) {
      skip('not a public key line');
      continue;
    }
    // from= alone the daemon enforces itself: it knows the client's address.
    const from = options?.length === 1 && options[0]!.name === 'from' ? options[0]!.value : undefined;
    if (options !== undefined && from === undefined) {
      skip(`it has options the proxy cannot enforce (${optionNames(options)}); use a line without options, or with from="..." alone`);
    } else if (!KEY_TYPES.has(type)) {
      skip(type === 'ssh-dss' ? 'DSA keys are not accepted' : `${type.split('@')[0]} keys are not supported`);
    } else {
      const encoded = firstField(rest.slice(type.length).trimStart());
      const blob = /^[A-Za-z0-9+/]+={0,2}$/.test(encoded) ? Buffer.from(encoded, 'base64') : Buffer.alloc(0);
      const key = blob.length > 0 && blobType(blob) === type ? parseKey(`${type} ${encoded}`) : undefined;
      if (key === undefined || key instanceof Error || !key.getPublicSSH().equals(blob)) skip(`the ${type} key does not parse`);
      else if (type === 'ssh-rsa' && rsaBits(blob) < MIN_RSA_BITS) skip(`RSA keys need at least ${MIN_RSA_BITS} bits`);
      else keys.push({ key, blob, line: index + 1, ...(from === undefined ? {} : { from }) });
    }
  }
  return { keys, problems };
}

/** Whether sshd's StrictModes would trust a file or folder with this owner and mode for `uid`. */
function trusted(stat: { uid: number; mode: number }, uid: number): boolean {
  return (stat.uid === uid || stat.uid === 0) && (stat.mode & 0o022) === 0;
}

/**
 * Reads `file` for `owner`. No file means no keys and no problem; a file
 * that is not safe to trust gives no keys and says why.
 */
export async function readAuthorizedKeys(file: string, owner: KeyOwner): Promise<AuthorizedKeys> {
  let real: string;
  try {
    real = await fsp.realpath(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { keys: [], problems: [] };
    return { keys: [], problems: [`${file}: not readable (${code})`] };
  }
  // O_NONBLOCK: a FIFO put there must not hang the read. O_NOFOLLOW: the
  // name was resolved above; a link swapped in since is refused.
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(real, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW | fsConstants.O_NOCTTY);
  } catch (err) {
    return { keys: [], problems: [`${file}: not readable (${(err as NodeJS.ErrnoException).code})`] };
  }
  try {
    return await readOpened(handle, file, real, owner);
  } catch (err) {
    // A folder removed or replaced while it was checked, say.
    return { keys: [], problems: [`${file}: not readable (${(err as NodeJS.ErrnoException).code ?? 'error'})`] };
  } finally {
    await handle.close();
  }
}

/** The checks on the opened file, then its keys. */
async function readOpened(handle: fsp.FileHandle, file: string, real: string, owner: KeyOwner): Promise<AuthorizedKeys> {
  const stat = await handle.stat();
  if (!stat.isFile()) return { keys: [], problems: [`${file}: not a regular file`] };
  if (!trusted(stat, owner.uid)) {
    return { keys: [], problems: [`${file}: refused, bad ownership or modes for file ${real} (it must belong to ${owner.name} or root and be writable by no one else)`] };
  }
  const problem = await untrustedFolder(real, owner);
  if (problem !== undefined) return { keys: [], problems: [`${file}: refused, ${problem}`] };
  const named = await fsp.stat(real);
  if (named.ino !== stat.ino || named.dev !== stat.dev) return { keys: [], problems: [`${file}: refused, it changed while it was read`] };
  // One byte more than allowed tells a file that grew since stat.
  const buffer = Buffer.alloc(Math.min(stat.size, MAX_FILE_BYTES) + 1);
  const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
  if (bytesRead > MAX_FILE_BYTES) return { keys: [], problems: [`${file}: refused, larger than ${MAX_FILE_BYTES} bytes`] };
  return parseAuthorizedKeys(buffer.toString('utf8', 0, bytesRead), file);
}

/** The first folder above `real` (up to the home, else to /) that StrictModes would not trust. */
async function untrustedFolder(real: string, owner: KeyOwner): Promise<string | undefined> {
  const home = await fsp.realpath(owner.home).catch(() => owner.home);
  for (let dir = path.dirname(real); ; dir = path.dirname(dir)) {
    const stat = await fsp.stat(dir);
    if (!trusted(stat, owner.uid)) {
      return `bad ownership or modes for directory ${dir} (it must belong to ${owner.name} or root and be writable by no one else)`;
    }
    if (dir === home || dir === path.dirname(dir)) return undefined;
  }
}
