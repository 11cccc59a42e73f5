// Test fixture: throw-away unix accounts (needs root). LocalProcessSpawner runs
// each hub user's server as the unix user of the same name.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { waitFor } from './wait.js';

export interface UnixUser {
  name: string;
  home: string;
  /** Kills the user's processes and deletes the account and home. Idempotent. */
  remove(): Promise<void>;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(err); // could not run the command at all (ENOENT, ...)
        return;
      }
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

// Exit codes from shadow-utils' man pages.
const USERADD_LOCK_BUSY = 10; // "can't update group file" / cannot lock /etc/passwd
const USERDEL_NO_SUCH_USER = 6;
const USERDEL_LOCK_BUSY = 10;
const USERDEL_USER_LOGGED_IN = 8; // processes still running as the user

/** Longer than JupyterHub's 30 s server poll, which reaps a killed single-user server. */
const USER_REMOVAL_TIMEOUT_MS = 45_000;

const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';

function randomSuffix(len: number): string {
  const bytes = crypto.randomBytes(len);
  return Array.from(bytes, (b) => ALNUM[b % ALNUM.length]).join('');
}

/**
 * Creates `jsp-<prefix>-<6 random chars>`. The name is kept lowercase,
 * <= 32 chars (useradd's limit) and free of '/', ':' and '+', which break
 * scp targets, passwd fields and NIS respectively.
 */
export async function createUnixUser(prefix = 'u'): Promise<UnixUser> {
  const clean = prefix.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '') || 'u';
  // 'jsp-' (4) + prefix + '-' (1) + suffix (6) <= 32
  return createNamedUnixUser(`jsp-${clean.slice(0, 32 - 4 - 1 - 6)}-${randomSuffix(6)}`);
}

/**
 * Creates the account `name`, for tests that need a given name (TLJH's
 * mapped names). One left by an interrupted run is removed first.
 */
export async function createNamedUnixUser(name: string): Promise<UnixUser> {
  await removeUnixUser(name);
  // Parallel test files may run useradd at the same time; it fails rather
  // than waits when /etc/passwd is locked, so retry that case.
  const res = await waitFor(
    async () => {
      const r = await run('useradd', ['-m', '-s', '/bin/bash', name]);
      if (r.code === USERADD_LOCK_BUSY) throw new Error(r.stderr.trim());
      return r;
    },
    { timeoutMs: 10_000, intervalMs: 200, what: `useradd ${name}` },
  );
  if (res.code !== 0) throw new Error(`useradd ${name} failed (${res.code}): ${res.stderr.trim()}`);

  const passwd = await run('getent', ['passwd', name]);
  const home = passwd.stdout.trim().split(':')[5];
  if (passwd.code !== 0 || !home) throw new Error(`getent passwd ${name} failed: ${passwd.stderr.trim()}`);

  let removing: Promise<void> | undefined;
  const remove = (): Promise<void> => (removing ??= removeUnixUser(name));
  return { name, home, remove };
}

/**
 * Kills the account's processes and deletes the account and its home; an
 * account that does not exist is fine. A plain `pkill; userdel` is not
 * enough: userdel refuses (exit 8) while a SIGKILLed process has not yet
 * gone (a Hub's single-user server stays until the Hub reaps it), so both
 * steps are retried together, for as long as a Hub takes to notice.
 */
export async function removeUnixUser(name: string): Promise<void> {
  const r = await waitFor(
    async () => {
      // pkill's exit 1 = nothing matched, 2 = user no longer exists; both are fine.
      await run('pkill', ['-KILL', '-u', name]);
      const r = await run('userdel', ['-r', name]);
      if (r.code === USERDEL_USER_LOGGED_IN || r.code === USERDEL_LOCK_BUSY) throw new Error(r.stderr.trim());
      return r;
    },
    { timeoutMs: USER_REMOVAL_TIMEOUT_MS, intervalMs: 200, what: `removal of unix user ${name}` },
  );
  // 0 may come with a warning such as "mail spool not found"; 6 = no such
  // user. Anything else will not improve by retrying.
  if (r.code !== 0 && r.code !== USERDEL_NO_SUCH_USER) {
    throw new Error(`userdel -r ${name} failed (${r.code}): ${r.stderr.trim()}`);
  }
}

/**
 * Writes `owner`'s ~/.ssh/authorized_keys as ssh-copy-id would: the
 * account's own, ~/.ssh 0700, the file 0600 (sshd's StrictModes, and the
 * daemon's key logins, refuse anything looser). Returns the file's path.
 */
export function listAuthorizedKeys(owner: UnixUser, lines: string[]): string {
  const { uid, gid } = fs.statSync(owner.home);
  const dir = path.join(owner.home, '.ssh');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chownSync(dir, uid, gid);
  fs.chmodSync(dir, 0o700);
  const file = path.join(dir, 'authorized_keys');
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, lines.map((line) => `${line}\n`).join(''), { mode: 0o600 });
  fs.chownSync(file, uid, gid);
  return file;
}
