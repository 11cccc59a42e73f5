/**
 * Login with a key (--authorized-keys-file): the public keys a unix account
 * lists in its authorized_keys, read with the rules of sshd's StrictModes.
 *
 * The daemon reads the file as the account, as sshd does (a home root may
 * not enter, such as NFS with root_squash, is read too), and checks what
 * sshd checks before it trusts one (auth_secure_path): the file and every
 * folder above it, up to the account's home, belong to the account or to
 * root and are writable by no one else. Otherwise anyone who can write
 * there could add a key.
 *
 * A line's options are read as sshd reads them (auth-options.c). Those
 * about the login, `from=` and `expiry-time=`, the daemon enforces itself:
 * it knows the client's address, which the upstream sshd does not. Those
 * about the session (`restrict`, `command=`, `no-pty`, `permitopen=`, ...)
 * go to the upstream, which applies them as sshd does (lib/localsshd.ts).
 * A `cert-authority` line lets in certificates its key signed
 * (lib/certificates.ts). A line sshd would refuse is skipped.
 * Problems are reported by line number and kind only: the daemon may be
 * made to read a file that is not a key list, whose lines must not reach
 * the log.
 */
import path from 'node:path';
import type { LoginTarget } from './authorizer.js';
import { parseKey, type ParsedKey } from './ssh2internals.js';
import { PERMISSIONS, type UserCertificate } from './certificates.js';
import { SECURITY_KEY_TYPES, SecurityKey, type SecurityKeyPolicy } from './securitykeys.js';
import { MIN_RSA_BITS } from './sshsignatures.js';
import { blobType } from './sshwire.js';
import { readAsUser, type FileReader } from './userfiles.js';

/** The key types a line may hold, as sshd's defaults accept them (no DSA, no SHA-1 RSA signatures). */
const KEY_TYPES = new Set(['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'ssh-rsa']);

/** sshd's default for a security key: touched, not necessarily verified. */
const DEFAULT_SECURITY_KEY_POLICY: SecurityKeyPolicy = Object.freeze({ touchRequired: true, verifyRequired: false });

/** Larger files are not read: thousands of keys fit in far less. */
const MAX_FILE_BYTES = 1024 * 1024;

export interface AuthorizedKey {
  key: ParsedKey | SecurityKey;
  /** The key in SSH wire format, as a client presents it. */
  blob: Buffer;
  /** 1-based, for the log. */
  line: number;
  /** The line's from="pattern-list": the addresses the key may log in from (lib/frompatterns.ts). */
  from?: string;
  /** The line's expiry-time, in ms since the epoch: the key logs in until then. */
  expiresAt?: number;
  /** The line's options about the session, for the upstream to apply. */
  sessionOptions?: SessionOptions;
  /** For a security key: what its signature must say (touch-required, verify-required). */
  securityKeyPolicy: SecurityKeyPolicy;
  /** A cert-authority line: the key signs certificates that log in, and does not log in itself. */
  certAuthority?: boolean;
  /** The line's principals="...": the certificate principals it takes instead of the account's name. */
  principals?: string;
}

/** Options of an authorized_keys line that act on the session. */
export interface SessionOptions {
  /** As written in the line (sshd's syntax), from= and expiry-time= left out. */
  text: string;
  /** Their names, for the log: values (a command, say) stay out of it. */
  names: string[];
}

export interface AuthorizedKeys {
  /** The unix account the keys log in as: a certificate's principals must name it (lib/certificates.ts). */
  account?: string;
  keys: AuthorizedKey[];
  /** Why lines or the whole file were not used, for the log; never a line's text. */
  problems: string[];
  /** Why no keys could be read, one line for the user (the log has `problems`). */
  notice?: string;
  /**
   * Set when the keys are the ones read last time, since the file cannot be
   * read now (lib/serverkeys.ts: the server that holds it is stopped). They
   * may only start the server; once it runs, `recheck(line)` says in one line
   * for the user why `line` no longer lets the login in, or undefined.
   */
  recheck?: (line: AuthorizedKey) => Promise<string | undefined>;
}

/** The unix account whose keys are read, as that account. */
export interface KeyOwner extends FileReader {
  home: string;
}

/**
 * Where a target's keys are read, for an upstream that can say. The same
 * upstream applies a key's session options: its `connect` is given them.
 */
export interface AuthorizedKeysSource {
  /** Keys that may log in to `target` without a token. */
  authorizedKeys(target: LoginTarget): Promise<AuthorizedKeys>;
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
 * The start of a line up to its first unquoted blank: a key type, or the
 * options before one; undefined if a quote is left open. As sshd's
 * sshkey_advance_past_options: \" is skipped, inside quotes or not.
 */
function firstField(line: string): string | undefined {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && line[i + 1] === '"') i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && (c === ' ' || c === '\t')) return line.slice(0, i);
  }
  return quoted ? undefined : line;
}

/** sshd's flag options (auth-options.c), and whether each also takes a `no-` in front. */
const FLAG_OPTIONS = new Map([
  ['restrict', false],
  ['cert-authority', false],
  ['port-forwarding', true],
  ['agent-forwarding', true],
  ['x11-forwarding', true],
  ['touch-required', true],
  ['verify-required', true],
  ['pty', true],
  ['user-rc', true],
]);

/** sshd's options with a quoted value; those it takes once only say so. */
const VALUE_OPTIONS = new Map([
  ['command', 'once'],
  ['principals', 'once'],
  ['from', 'once'],
  ['expiry-time', 'many'],
  ['environment', 'many'],
  ['permitopen', 'many'],
  ['permitlisten', 'many'],
  ['tunnel', 'many'],
]);

interface KeyOption {
  /** Lower case, `no-` kept: `no-pty`. */
  name: string;
  /** Unquoted, \" made a quote. */
  value?: string;
  /** As written. */
  text: string;
}

/**
 * The options of an options field, read as sshd's sshauthopt_parse reads
 * them; a string says why sshd would refuse the line.
 */
function parseOptions(field: string): KeyOption[] | string {
  const options: KeyOption[] = [];
  let at = 0;
  for (;;) {
    const start = at;
    while (at < field.length && !'=,'.includes(field[at]!)) at++;
    const name = field.slice(start, at).toLowerCase();
    let value: string | undefined;
    if (field[at] === '=') {
      if (!VALUE_OPTIONS.has(name)) return `unknown option ${optionName(name)}`;
      // sshd's opt_dequote: in double quotes, \" for a quote inside.
      if (field[++at] !== '"') return `the value of ${name} is not in double quotes`;
      value = '';
      for (at++; at < field.length && field[at] !== '"'; at++) {
        if (field[at] === '\\' && field[at + 1] === '"') at++;
        value += field[at];
      }
      if (at === field.length) return `the value of ${name} has no closing quote`;
      at++;
    } else {
      const bare = name.startsWith('no-') ? name.slice(3) : name;
      const negatable = FLAG_OPTIONS.get(bare);
      if (negatable === undefined || (bare !== name && !negatable)) return `unknown option ${optionName(name)}`;
    }
    if (value !== undefined && VALUE_OPTIONS.get(name) === 'once' && options.some((o) => o.name === name)) return `more than one ${name}=`;
    options.push({ name, value, text: field.slice(start, at) });
    if (at === field.length) return options;
    if (field[at] !== ',') return `${name}="..." is not followed by a comma`;
    if (at === field.length - 1) return 'they end in a comma';
    at++;
  }
}

/** An option name fit for the log: the line's own text, so no odd characters. */
function optionName(name: string): string {
  return /^[a-z0-9@._-]{1,40}$/.test(name) ? name : '?';
}

/**
 * sshd's expiry-time: YYYYMMDD[HHMM[SS]], local time, or UTC with a `Z`
 * or `UTC` after it; undefined if it is none of those.
 */
export function parseExpiryTime(text: string): number | undefined {
  const m = /^(\d{4})(\d\d)(\d\d)(?:(\d\d)(\d\d)(\d\d)?)?(z|utc)?$/i.exec(text);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map((f) => Number(f ?? 0)) as [number, number, number, number, number, number];
  // strptime's ranges; mktime then carries over (31 February is 3 March) as Date does.
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 61) return undefined;
  const date = new Date(0);
  if (m[7] === undefined) {
    date.setFullYear(year, month - 1, day);
    date.setHours(hour, minute, second, 0);
  } else {
    date.setUTCFullYear(year, month - 1, day);
    date.setUTCHours(hour, minute, second, 0);
  }
  const at = date.getTime();
  return at > 0 ? at : undefined;
}

/** What a key's line adds to the key. */
type LineOptions = Pick<AuthorizedKey, 'from' | 'expiresAt' | 'sessionOptions' | 'securityKeyPolicy' | 'certAuthority' | 'principals'>;

/**
 * What a line's options mean for a key login: from=, expiry-time=,
 * cert-authority, principals= and a security key's touch-required and
 * verify-required to enforce here, the rest for the session; a string says
 * why the line is skipped.
 */
function readOptions(field: string): LineOptions | string {
  const options = parseOptions(field);
  if (typeof options === 'string') return `sshd would refuse its options: ${options}`;
  const read: LineOptions = { securityKeyPolicy: { ...DEFAULT_SECURITY_KEY_POLICY } };
  const session: KeyOption[] = [];
  for (const option of options) {
    // As sshd: the last one counts. On other keys they mean nothing.
    if (option.name === 'cert-authority') {
      read.certAuthority = true;
    } else if (option.name === 'principals') {
      read.principals = option.value;
    } else if (option.name.endsWith('touch-required')) {
      read.securityKeyPolicy.touchRequired = option.name === 'touch-required';
    } else if (option.name.endsWith('verify-required')) {
      read.securityKeyPolicy.verifyRequired = option.name === 'verify-required';
    } else if (option.name === 'from') {
      read.from = option.value;
    } else if (option.name === 'expiry-time') {
      const at = parseExpiryTime(option.value!);
      if (at === undefined) return 'sshd would refuse its options: expiry-time is not YYYYMMDD[HHMM[SS]][Z]';
      // sshd keeps the earliest.
      read.expiresAt = Math.min(at, read.expiresAt ?? at);
    } else {
      session.push(option);
    }
  }
  if (session.length > 0) read.sessionOptions = { text: session.map((o) => o.text).join(','), names: session.map((o) => o.name) };
  return read;
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
    let options: LineOptions | string = { securityKeyPolicy: DEFAULT_SECURITY_KEY_POLICY };
    if (type !== undefined && !isKeyType(type)) {
      options = readOptions(type);
      rest = rest.slice(type.length).trimStart();
      type = firstField(rest);
    }
    if (type === undefined || !isKeyType(type)) {
      skip('not a public key line');
    } else if (!KEY_TYPES.has(type) && !SECURITY_KEY_TYPES.has(type)) {
      skip(type === 'ssh-dss' ? 'DSA keys are not accepted' : `${type.split('@')[0]} keys are not supported`);
    } else if (typeof options === 'string') {
      skip(options);
    } else if (/[\0-\x1f\x7f\ufffd]/.test(options.sessionOptions?.text ?? '')) {
      // They are written again for sshd, which reads C strings: a NUL would cut them short.
      skip('its options hold control characters or bytes that are not UTF-8');
    } else {
      const encoded = firstField(rest.slice(type.length).trimStart()) ?? '';
      const blob = /^[A-Za-z0-9+/]+={0,2}$/.test(encoded) ? Buffer.from(encoded, 'base64') : Buffer.alloc(0);
      const key = blob.length === 0 || blobType(blob) !== type ? undefined : SECURITY_KEY_TYPES.has(type) ? SecurityKey.parse(blob) : parseKey(`${type} ${encoded}`);
      if (key === undefined || key instanceof Error || !key.getPublicSSH().equals(blob)) skip(`the ${type} key does not parse`);
      else if (type === 'ssh-rsa' && rsaBits(blob) < MIN_RSA_BITS) skip(`RSA keys need at least ${MIN_RSA_BITS} bits`);
      else if (options.certAuthority && key instanceof SecurityKey) skip('security keys are not supported as certificate authorities');
      else keys.push({ key, blob, line: index + 1, ...options });
    }
  }
  return { keys, problems };
}

/**
 * A list of bare public keys, one per line, comments and blank lines
 * allowed (sshd's TrustedUserCAKeys): authorized_keys lines without
 * options, whose lines with options are skipped as problems.
 */
export function parseKeyList(text: string, source: string): AuthorizedKeys {
  const parsed = parseAuthorizedKeys(text, source);
  // A line without options shares the default policy object; readOptions gives every line with options a copy.
  const bare = parsed.keys.filter((entry) => entry.securityKeyPolicy === DEFAULT_SECURITY_KEY_POLICY);
  const optioned = parsed.keys.filter((entry) => !bare.includes(entry)).map((entry) => `${source} line ${entry.line}: skipped, options are not taken here`);
  return { keys: bare, problems: [...parsed.problems, ...optioned] };
}

/** Why a login signature made with a listed key does not do; undefined when it does. */
export function signatureRefusal(listed: AuthorizedKey, data: Buffer, signature: Buffer, hashAlgo?: string): string | undefined {
  if (listed.key instanceof SecurityKey) return listed.key.refusal(data, signature, listed.securityKeyPolicy);
  return listed.key.verify(data, signature, hashAlgo) === true ? undefined : 'signature does not verify';
}

/**
 * The session options of a login with `certificate` through the
 * cert-authority `line`, merged as sshd merges them: a flag only where both
 * allow it (a certificate allows only what its permit-* extensions name),
 * and where both force a command, it must be the same. A string says why
 * the login is refused.
 */
export function certificateSessionOptions(line: AuthorizedKey, certificate: UserCertificate): SessionOptions | string {
  // The line's session options parsed when it was read; they parse again.
  const options = line.sessionOptions === undefined ? [] : (parseOptions(line.sessionOptions.text) as KeyOption[]);
  // The flags a certificate's permit-* extensions stand for, as the line leaves them.
  const flags = Object.values(PERMISSIONS);
  const allowed = new Set(flags);
  const rest: KeyOption[] = [];
  let command: string | undefined;
  for (const option of options) {
    const bare = option.name.replace(/^no-/, '');
    if (option.name === 'restrict') {
      allowed.clear();
    } else if (flags.includes(bare)) {
      if (bare === option.name) allowed.add(bare);
      else allowed.delete(bare);
    } else if (option.name === 'command') {
      command = option.value;
    } else {
      rest.push(option);
    }
  }
  if (command !== undefined && certificate.forceCommand !== undefined && command !== certificate.forceCommand) {
    return "the certificate's force-command and its line's command= differ";
  }
  command ??= certificate.forceCommand;
  // In sshd's quoting only \" is special: a command that ends in a backslash would not be read back.
  if (command !== undefined && (/[\0-\x1f\x7f]/.test(command) || command.endsWith('\\'))) return 'its forced command cannot be passed on to sshd';
  const granted = flags.filter((flag) => allowed.has(flag) && certificate.permissions.has(flag));
  const forced = command === undefined ? [] : [{ name: 'command', text: `command="${command.replace(/"/g, '\\"')}"` }];
  const all = [{ name: 'restrict', text: 'restrict' }, ...granted.map((flag) => ({ name: flag, text: flag })), ...rest, ...forced];
  return { text: all.map((o) => o.text).join(','), names: all.map((o) => o.name) };
}

/** Whether sshd's StrictModes would trust a file or folder with this owner and mode for `uid`. */
function trusted(stat: { uid: number; mode: number }, uid: number): boolean {
  return (stat.uid === uid || stat.uid === 0) && (stat.mode & 0o022) === 0;
}

/**
 * Reads `file` for `owner`, as the owner (lib/userfiles.ts). No file means
 * no keys and no problem; a file that is not safe to trust gives no keys
 * and says why.
 */
export async function readAuthorizedKeys(file: string, owner: KeyOwner): Promise<AuthorizedKeys> {
  const read = await readAsUser(file, owner.home, owner, MAX_FILE_BYTES);
  if (read.error !== undefined) {
    if (read.step === 'realpath' && (read.error === 'ENOENT' || read.error === 'ENOTDIR')) return { keys: [], problems: [] };
    const as = read.step === 'identity' ? ` as ${owner.name}` : '';
    return { keys: [], problems: [`${file}: not readable${as} (${read.error})`] };
  }
  if (!read.file.regular) return { keys: [], problems: [`${file}: not a regular file`] };
  if (!trusted(read.file, owner.uid)) {
    return { keys: [], problems: [`${file}: refused, bad ownership or modes for file ${read.real} (it must belong to ${owner.name} or root and be writable by no one else)`] };
  }
  const folder = read.dirs.find((dir) => !trusted(dir, owner.uid));
  if (folder !== undefined) {
    return {
      keys: [],
      problems: [`${file}: refused, bad ownership or modes for directory ${folder.path} (it must belong to ${owner.name} or root and be writable by no one else)`],
    };
  }
  if (read.named.ino !== read.file.ino || read.named.dev !== read.file.dev) return { keys: [], problems: [`${file}: refused, it changed while it was read`] };
  // One byte more than allowed tells a file that grew since it was opened.
  if (read.content!.length > MAX_FILE_BYTES) return { keys: [], problems: [`${file}: refused, larger than ${MAX_FILE_BYTES} bytes`] };
  return parseAuthorizedKeys(read.content!.toString('utf8'), file);
}
