/**
 * The fuzz target: the real daemon (bin/jupyter_ssh_proxy, started through
 * the test fixture) in front of a real JupyterHub with one unix + Hub user
 * and a token, so that the userauth stage gets real answers. And the checks
 * after a run: the daemon alive, its descriptors and children back to the
 * baseline, its memory bounded, and a real `ssh` login working.
 */
import { createHubUser, createToken, startHub, type Hub } from '../test/helpers/hub.js';
import { startProxy, type ProxyProcess } from '../test/helpers/proxy.js';
import { ssh } from '../test/helpers/ssh.js';
import { createUnixUser, type UnixUser } from '../test/helpers/unixuser.js';
import { waitFor } from '../test/helpers/wait.js';
import { alive, children, fdCount, fdSummary, rssKiB } from './procfs.js';

/**
 * Penalties off (they would refuse the fuzzer after its first malformed
 * case) and MaxStartups out of the way of ~16 concurrent connections.
 */
export const FUZZ_PROXY_ARGS = ['--per-source-penalties', 'no', '--max-startups', '1000:100:1000'];

/** Daemon log lines that point at a bug rather than at bad input. */
const SUSPICIOUS = /\] error: |unexpectedly|Internal error|Uncaught|^\s+at |^\w*Error\b|FATAL|heap out of memory/;

export interface FuzzTarget {
  hub: Hub;
  user: UnixUser;
  token: string;
  proxy: ProxyProcess;
  pid: number;
  /** Suspicious daemon log lines (the first 50) and how many there were. */
  suspicious: string[];
  suspiciousCount(): number;
  stop(): Promise<void>;
}

export interface TargetOptions {
  proxyArgs?: string[];
  /** Daemon log level (default info: debug logs every connection). */
  logLevel?: string;
}

export async function startTarget(options: TargetOptions = {}): Promise<FuzzTarget> {
  const cleanup: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const step of cleanup.splice(0).reverse()) await step().catch(() => undefined);
  };
  try {
    const hub = await startHub();
    cleanup.push(() => hub.stop());
    const user = await createUnixUser('fuzz');
    cleanup.push(() => user.remove());
    await createHubUser(hub, user.name);
    const { token } = await createToken(hub, user.name);
    const suspicious: string[] = [];
    let count = 0;
    let partial = '';
    const proxy = await startProxy(hub.url, options.proxyArgs ?? FUZZ_PROXY_ARGS, {
      logLevel: options.logLevel ?? 'info',
      onOutput: (text) => {
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          if (!SUSPICIOUS.test(line)) continue;
          count++;
          if (suspicious.length < 50) suspicious.push(line);
        }
      },
    });
    cleanup.push(() => proxy.stop());
    return { hub, user, token, proxy, pid: proxy.child.pid!, suspicious, suspiciousCount: () => count, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export interface Baseline {
  fds: number;
  rssKiB: number;
}

export function baseline(pid: number): Baseline {
  return { fds: fdCount(pid), rssKiB: rssKiB(pid) };
}

export interface AfterRun {
  alive: boolean;
  fds: number;
  fdSummary: string;
  children: string[];
  rssKiB: number;
  loginOk: boolean;
  loginDetail: string;
  problems: string[];
}

/**
 * Waits (up to `timeoutMs`) for the daemon's descriptors to come back within
 * `fdSlack` of the baseline and its children (sshd) to be gone, then logs in
 * with the real OpenSSH client.
 */
export async function checkAfterRun(target: FuzzTarget, base: Baseline, fdSlack = 5, timeoutMs = 30_000): Promise<AfterRun> {
  const problems: string[] = [];
  const pid = target.pid;
  const result: AfterRun = { alive: alive(pid), fds: 0, fdSummary: '', children: [], rssKiB: 0, loginOk: false, loginDetail: '', problems };
  if (!result.alive) {
    // Let the exit status and the last output arrive.
    await waitFor(() => target.proxy.child.exitCode !== null || target.proxy.child.signalCode !== null, {
      timeoutMs: 5000,
      what: 'the exit status',
    }).catch(() => undefined);
    problems.push(`the daemon is not running (exit ${target.proxy.child.exitCode}, signal ${target.proxy.child.signalCode})`);
    return result;
  }
  try {
    await waitFor(() => fdCount(pid) <= base.fds + fdSlack && children(pid).length === 0, {
      timeoutMs,
      intervalMs: 200,
      what: 'descriptors and children back to the baseline',
    });
  } catch {
    // Reported below with the numbers.
  }
  result.fds = fdCount(pid);
  result.fdSummary = fdSummary(pid);
  result.children = children(pid).map((c) => `${c.pid} ${c.comm}`);
  result.rssKiB = rssKiB(pid);
  if (result.fds > base.fds + fdSlack) problems.push(`${result.fds} open descriptors, baseline ${base.fds} (${result.fdSummary})`);
  if (result.children.length > 0) problems.push(`children left: ${result.children.join(', ')}`);
  const login = await ssh(target.proxy.port, target.user.name, target.token, ['echo', 'fuzz-login-ok'], ['-o', 'LogLevel=ERROR'], {
    timeoutMs: 60_000,
  });
  result.loginOk = login.code === 0 && login.stdout.toString() === 'fuzz-login-ok\n';
  result.loginDetail = `exit ${login.code}, stdout ${JSON.stringify(login.stdout.toString())}, stderr ${JSON.stringify(login.stderr.trim())}`;
  if (!result.loginOk) problems.push(`real ssh login failed: ${result.loginDetail}`);
  if (!alive(pid)) problems.push('the daemon died during the final checks');
  return result;
}
