// Drives the real OpenSSH client. The token reaches ssh through SSH_ASKPASS,
// so the same path serves password and keyboard-interactive prompts.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const askpassDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-askpass-'));
export const ASKPASS = path.join(askpassDir, 'askpass.sh');
fs.writeFileSync(ASKPASS, '#!/bin/sh\nprintf "%s\\n" "$JSP_TEST_TOKEN"\n', { mode: 0o700 });
process.on('exit', () => fs.rmSync(askpassDir, { recursive: true, force: true }));

/** Options every test connection uses: no config files, no host key prompts, token auth only. */
export function sshOptions(port: number): string[] {
  return [
    '-F', '/dev/null',
    '-p', String(port),
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'PubkeyAuthentication=no',
    '-o', 'GSSAPIAuthentication=no',
    '-o', 'ConnectTimeout=20',
  ];
}

/**
 * sshOptions for a login with `keyFile` alone, no prompt (BatchMode) and no
 * agent: what scripts and cron jobs run.
 */
export function keyLoginOptions(port: number, keyFile: string): string[] {
  const options = sshOptions(port);
  options[options.indexOf('PubkeyAuthentication=no')] = 'PubkeyAuthentication=yes';
  return [...options, '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-i', keyFile];
}

/** sshOptions for sftp and scp, which spell the port -P. */
export function fileCopyOptions(port: number): string[] {
  const options = sshOptions(port);
  options[options.indexOf('-p')] = '-P';
  return options;
}

/** Environment that feeds `token` to ssh's prompts. */
export function askpassEnv(token: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    SSH_ASKPASS: ASKPASS,
    SSH_ASKPASS_REQUIRE: 'force',
    DISPLAY: process.env.DISPLAY ?? ':0',
    JSP_TEST_TOKEN: token,
    ...extra,
  };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export interface RunOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Called with the child right after spawn (to stream stdin, say). */
  onSpawn?: (child: ChildProcess) => void;
}

/** Runs a command to completion; rejects only if it cannot start or exceeds its deadline. */
export function run(cmd: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish in ${options.timeoutMs ?? 60_000} ms; stderr: ${err}`));
    }, options.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.on('error', () => {});
    if (options.onSpawn) options.onSpawn(child);
    else child.stdin.end(options.input ?? '');
  });
}

/**
 * An ssh of OpenSSH 9.9 or later, with mlkem768x25519-sha256 and keystroke
 * timing obfuscation: the system's where it has them, else the one
 * `scripts/install-deps.sh --test` unpacks from bookworm-backports (Debian
 * 12's own is 9.2).
 */
export const RECENT_SSH_CLIENT = ['/opt/jupyter-ssh-proxy-test/openssh-client/usr/bin/ssh'].find((file) => fs.existsSync(file)) ?? 'ssh';

export interface SshRunOptions extends RunOptions {
  /** The ssh to run; the system's unless given. */
  client?: string;
}

/** `ssh -p PORT [extra] user@127.0.0.1 command`, with the token from askpass. */
export function ssh(
  port: number,
  user: string,
  token: string,
  command: string[],
  extra: string[] = [],
  options: SshRunOptions = {},
): Promise<RunResult> {
  return run(options.client ?? 'ssh', [...sshOptions(port), ...extra, `${user}@127.0.0.1`, ...command], {
    ...options,
    env: askpassEnv(token, options.env),
  });
}
