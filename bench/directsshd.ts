// The comparison path: a long-lived OpenSSH sshd on 127.0.0.1 with its own
// host key, and a bench client key in an authorized-keys file of its own.
//
// StrictModes checks every directory on the way to AuthorizedKeysFile, and
// /tmp is world-writable, so the files live in a root-owned mkdtemp directory
// under /run instead.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, waitFor } from '../test/helpers/wait.js';
import { descendants } from './procfs.js';

/**
 * The algorithms the proxy offers clients: the direct sshd offers the same
 * (of the key exchanges, those this OpenSSH has), so that both paths
 * negotiate the same key exchange and, unless -c says otherwise, the same
 * cipher.
 */
import { CIPHERS as PROXY_CIPHERS, CLIENT_LEG_KEX as PROXY_KEX, MACS as PROXY_MACS } from '../lib/algorithms.js';
import { sshdConfig } from '../lib/localsshd.js';

export interface DirectSshd {
  port: number;
  pid: number;
  dir: string;
  /** The bench client's private key (for `ssh -i`). */
  clientKey: string;
  /** Kills the listener and every per-connection sshd, removes the directory. Idempotent. */
  stop(): Promise<void>;
}

/** The key exchange methods this machine's OpenSSH knows (sshd refuses a KexAlgorithms line with any other). */
const OPENSSH_KEX = new Set(execFileSync('ssh', ['-Q', 'kex'], { encoding: 'utf8' }).split('\n'));

function config(dir: string): string {
  // The daemon's own sshd settings (the first value of a keyword wins), then
  // what a listening sshd for the bench needs.
  return `${sshdConfig(dir)}# jupyter-ssh-proxy benchmark: the direct path
HostKeyAlgorithms ssh-ed25519
KexAlgorithms ${PROXY_KEX.filter((kex) => OPENSSH_KEX.has(kex)).join(',')}
Ciphers ${PROXY_CIPHERS.join(',')}
MACs ${PROXY_MACS.join(',')}
# 1,000 sessions are opened 50 at a time: no random early drop.
MaxStartups 2000
LoginGraceTime 120
LogLevel ERROR
`;
}

function keygen(file: string, comment: string): void {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { stdio: 'ignore' });
}

/** Resolves when something on 127.0.0.1:port sends an SSH banner. */
function banner(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.once('data', (d: Buffer) => done(d.toString('latin1').startsWith('SSH-2.0-')));
    socket.once('error', () => done(false));
  });
}

export async function startDirectSshd(sshdPath = '/usr/sbin/sshd'): Promise<DirectSshd> {
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // privilege separation dir
  const dir = fs.mkdtempSync('/run/jsp-bench-');
  // sshd reads authorized_keys as the target user: traversable dir, readable file.
  fs.chmodSync(dir, 0o755);
  const priv = path.join(dir, 'private');
  fs.mkdirSync(priv, { mode: 0o700 });
  keygen(path.join(priv, 'ssh_host_ed25519_key'), 'jsp-bench-direct-host');
  const clientKey = path.join(priv, 'client_ed25519');
  keygen(clientKey, 'jsp-bench-client');
  fs.writeFileSync(path.join(dir, 'authorized_keys'), fs.readFileSync(`${clientKey}.pub`), { mode: 0o644 });
  const configPath = path.join(priv, 'sshd_config');
  fs.writeFileSync(configPath, config(dir), { mode: 0o600 });
  const logPath = path.join(priv, 'sshd.log');

  let child: ChildProcess | undefined;
  let port = 0;
  try {
    execFileSync(sshdPath, ['-t', '-f', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      const logFd = fs.openSync(logPath, 'a');
      child = spawn(sshdPath, ['-D', '-e', '-f', configPath, '-p', String(port), '-o', 'ListenAddress=127.0.0.1'], {
        stdio: ['ignore', logFd, logFd],
        detached: true,
      });
      fs.closeSync(logFd);
      let exited = false;
      child.once('exit', () => (exited = true));
      const up = await waitFor(async () => (exited ? 'exited' : (await banner(port)) ? 'up' : undefined), {
        timeoutMs: 10_000,
        what: `direct sshd on port ${port}`,
      });
      if (up === 'up') break;
      if (attempt >= 3) throw new Error(`direct sshd did not start: ${fs.readFileSync(logPath, 'utf8')}`);
    }
  } catch (err) {
    child?.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const listener = child!;
  const pid = listener.pid!;
  let stopping: Promise<void> | undefined;
  return {
    port,
    pid,
    dir,
    clientKey,
    stop: () =>
      (stopping ??= (async () => {
        const kill = (sig: NodeJS.Signals) => {
          for (const p of descendants(pid)) {
            try {
              process.kill(p, sig);
            } catch {
              // gone
            }
          }
          try {
            process.kill(pid, sig);
          } catch {
            // gone
          }
        };
        if (listener.exitCode === null && listener.signalCode === null) {
          kill('SIGTERM');
          for (let i = 0; i < 50 && listener.exitCode === null && listener.signalCode === null; i++) await sleep(100);
          kill('SIGKILL');
        }
        fs.rmSync(dir, { recursive: true, force: true });
      })()),
  };
}
