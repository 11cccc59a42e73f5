// The benchmark's fixtures: a real JupyterHub, a unix + Hub user with a
// token, the proxy daemon (all through test/helpers), and a direct sshd.
// Everything is torn down by cleanup(), also on Ctrl-C and on failure.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DAEMON_ENV, DAEMON_NODE_ARGS } from '../test/helpers/deployed.js';
import { createHubUser, createToken, startHub, type Hub } from '../test/helpers/hub.js';
import { metricsOrigin } from '../test/helpers/metrics.js';
import { startProxy, type ProxyProcess } from '../test/helpers/proxy.js';
import { CLASSIC_NOTEBOOK_SERVER, installServerExtension, serverExtensionConfig } from '../test/helpers/serverextension.js';
import { askpassEnv, sshOptions } from '../test/helpers/ssh.js';
import { createUnixUser, listAuthorizedKeys, type UnixUser } from '../test/helpers/unixuser.js';
import { killAllTracked } from './children.js';
import { createCpuGroup, type CpuGroup } from './cgroup.js';
import { startDirectSshd, type DirectSshd } from './directsshd.js';
import { cpuTimes } from './procfs.js';

/** How the bench reaches the user's shell: directly or through the proxy. */
export interface SshPath {
  name: 'direct' | 'proxy';
  port: number;
  /** The process whose CPU time is the server side: the daemon, or the direct sshd listener. */
  serverPid: number;
  /**
   * CPU seconds so far: `daemon` = the proxy daemon itself (proxy path only),
   * `total` = the daemon (if any) plus every sshd process and remote command
   * it ever had (a cgroup; without one, only what /proc's cutime saw).
   */
  serverCpu(): { daemon?: number; daemonUser?: number; total: number };
  /** The daemon's Prometheus endpoint (proxy path only): its V8 GC counters tell when freed memory has been collected. */
  metricsOrigin?: string;
  /** ssh's options; `extra` come first, and ssh keeps the first value it sees of each option. */
  sshArgs(extra?: string[]): string[];
  /** `sftp` arguments before the destination (port spelled -P). */
  sftpArgs(extra?: string[]): string[];
  destination: string;
  env: NodeJS.ProcessEnv;
}

export interface BenchEnv {
  hub: Hub;
  user: UnixUser;
  token: string;
  proxy: ProxyProcess;
  direct: DirectSshd;
  tmp: string;
  directPath: SshPath;
  proxyPath(token?: string): SshPath;
  /** Through the daemon with the direct path's key instead of a token (a key login). */
  proxyKeyPath: SshPath;
  /** `p` with the client connecting to `port` instead: a delay line in front of its server (bench/delayline.ts). */
  viaPort(p: SshPath, port: number): SshPath;
  /**
   * Another daemon with the main one's host keys (no RSA key generation),
   * started with `flags` and node's `nodeArgs` added, and the path through
   * it: for cases that measure a flag, and for the profiles.
   */
  extraDaemon(options: { flags?: string[]; nodeArgs?: string[] }): Promise<ExtraDaemon>;
  /** False when no cgroup could be made: sshd CPU is then undercounted. */
  cgroups: boolean;
}

export interface ExtraDaemon {
  pid: number;
  path: SshPath;
  /** SIGTERM and wait for the exit (node writes a --cpu-prof file on the way out). */
  stop(): Promise<void>;
}

/** A proxy daemon the bench started, with its metrics address and CPU accounting group. */
interface BenchDaemon {
  proxy: ProxyProcess;
  metricsAt: string;
  group: CpuGroup | undefined;
}

/** A cgroup for `pid` and its future children, removed at cleanup. */
function accountingGroup(name: string, pid: number): CpuGroup | undefined {
  const group = createCpuGroup(name);
  if (!group) return undefined;
  onCleanup(() => group.remove());
  try {
    group.add(pid);
    return group;
  } catch {
    return undefined;
  }
}

function serverCpu(pid: number, group: CpuGroup | undefined, isDaemon: boolean): SshPath['serverCpu'] {
  return () => {
    const t = cpuTimes(pid);
    const total = group ? group.usageSeconds() : t.self + t.children;
    return isDaemon ? { daemon: t.self, daemonUser: t.user, total } : { total };
  };
}

const QUIET = ['-o', 'LogLevel=ERROR'];

/**
 * The key exchange of every case, on both paths: curve25519-sha256, as in
 * every run before the proxy offered sntrup761x25519-sha512. With OpenSSH
 * 9.2's own first choice, sntrup761, the client spends ~75 ms of CPU making
 * its key for each login on either path (bench/README.md, "sntrup761x25519-sha512,
 * thirty-third session"): the same on both, which would hide part of what
 * the proxy costs in the parallel and idle cases behind it.
 */
const KEX = ['-o', 'KexAlgorithms=curve25519-sha256'];

const cleanups: (() => Promise<void> | void)[] = [];

/** Registers a teardown step; they run in reverse order. */
export function onCleanup(step: () => Promise<void> | void): void {
  cleanups.push(step);
}

let cleaning: Promise<void> | undefined;

export function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    killAllTracked('SIGKILL');
    while (cleanups.length > 0) {
      const step = cleanups.pop()!;
      try {
        await step();
      } catch (err) {
        console.error(`cleanup: ${(err as Error).message}`);
      }
    }
  })();
  return cleaning;
}

function withPortFlag(options: string[], flag: '-p' | '-P'): string[] {
  const out = [...options];
  out[out.indexOf('-p')] = flag;
  return out;
}


export async function setUp(log: (line: string) => void): Promise<BenchEnv> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-bench-'));
  onCleanup(() => fs.rmSync(tmp, { recursive: true, force: true }));

  // The websocket case's sessions run in the user's server: the server extension goes in as an image would have it,
  // where the user's server can read it (tmp is private).
  const extensionDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-bench-ext-'));
  onCleanup(() => fs.rmSync(extensionDir, { recursive: true, force: true }));
  fs.chmodSync(extensionDir, 0o755);
  const site = path.join(extensionDir, 'site');
  await installServerExtension(site);
  log('starting JupyterHub');
  const hub = await startHub({ extraConfig: serverExtensionConfig(site, CLASSIC_NOTEBOOK_SERVER) });
  onCleanup(() => hub.stop());
  const user = await createUnixUser('bench');
  onCleanup(() => user.remove());
  await createHubUser(hub, user.name);
  const { token } = await createToken(hub, user.name);
  log(`unix + hub user ${user.name}, token minted`);

  // Info, as in production (the helper's default is debug). The direct sshd
  // has MaxStartups 2000 for the 1,000-session case; so does the proxy.
  // A session of its own, as under systemd and as the direct sshd: the
  // kernel's autogroups share CPU between sessions first, and in the bench's
  // session the daemon shared one share with every ssh client
  // (bench/README.md, "The daemon's session").
  const startDaemon = async (group: string, flags: string[], nodeArgs: string[] = [], keyDir?: string): Promise<BenchDaemon> => {
    // Set up as docs/deploy.md recommends: with the Hub's service token, and key logins on.
    const proxy = await startProxy(hub.url, ['--max-startups', '2000', '--metrics-ip', '127.0.0.1', '--metrics-port', '0', '--authorized-keys-file', '.ssh/authorized_keys', ...flags], {
      logLevel: 'info',
      nodeArgs: [...DAEMON_NODE_ARGS, ...nodeArgs],
      keyDir,
      env: { ...DAEMON_ENV, JUPYTERHUB_API_TOKEN: hub.serviceToken },
      detached: true,
    });
    onCleanup(() => proxy.stop());
    const metricsAt = metricsOrigin(proxy.logs());
    if (!metricsAt) throw new Error(`the daemon did not log its metrics address:\n${proxy.logs()}`);
    log(`proxy daemon pid ${proxy.child.pid} on port ${proxy.port}${flags.length > 0 ? ` with ${flags.join(' ')}` : ''}`);
    return { proxy, metricsAt, group: accountingGroup(group, proxy.child.pid!) };
  };
  const daemon = await startDaemon('jsp-bench-proxy', []);
  const { proxy } = daemon;

  const direct = await startDirectSshd();
  onCleanup(() => direct.stop());
  const directGroup = accountingGroup('jsp-bench-direct', direct.pid);
  log(`direct sshd pid ${direct.pid} on port ${direct.port} (${direct.dir})`);
  const cgroups = daemon.group !== undefined && directGroup !== undefined;
  if (!cgroups) log('warning: no cgroup for CPU accounting; sshd CPU will be undercounted');

  const destination = `${user.name}@127.0.0.1`;
  // sshOptions turns public-key login off (the proxy path uses the token);
  // the direct path uses the bench key and nothing else.
  const directOptions = (port: number) =>
    sshOptions(port)
      .map((o) => (o === 'PubkeyAuthentication=no' ? 'PubkeyAuthentication=yes' : o))
      .concat(['-i', direct.clientKey, '-o', 'IdentitiesOnly=yes', '-o', 'PasswordAuthentication=no', '-o', 'KbdInteractiveAuthentication=no', '-o', 'BatchMode=yes']);
  const directAt = (port: number): SshPath => ({
    name: 'direct',
    port,
    serverPid: direct.pid,
    serverCpu: serverCpu(direct.pid, directGroup, false),
    sshArgs: (extra = []) => [...extra, ...directOptions(port), ...QUIET, ...KEX],
    sftpArgs: (extra = []) => [...withPortFlag(directOptions(port), '-P'), ...QUIET, ...KEX, ...extra],
    destination,
    env: { ...process.env },
  });
  const proxyAt = (port: number, t: string, d = daemon): SshPath => ({
    name: 'proxy',
    port,
    serverPid: d.proxy.child.pid!,
    serverCpu: serverCpu(d.proxy.child.pid!, d.group, true),
    metricsOrigin: d.metricsAt,
    sshArgs: (extra = []) => [...extra, ...sshOptions(port), ...QUIET, ...KEX],
    // sftp -b implies BatchMode=yes, which would forbid the token prompt.
    sftpArgs: (extra = []) => [...withPortFlag(sshOptions(port), '-P'), ...QUIET, ...KEX, '-o', 'BatchMode=no', ...extra],
    destination,
    env: askpassEnv(t),
  });
  const directPath = directAt(direct.port);
  const proxyPath = (t = token): SshPath => proxyAt(proxy.port, t);
  // The direct path's key, listed in the user's own authorized_keys.
  listAuthorizedKeys(user, [fs.readFileSync(`${direct.clientKey}.pub`, 'utf8').trim()]);
  // The daemon's server side with the direct path's client side (its key, no token).
  const keyClient = directAt(proxy.port);
  const proxyKeyPath: SshPath = { ...proxyPath(), sshArgs: keyClient.sshArgs, sftpArgs: keyClient.sftpArgs, env: keyClient.env };
  // The same user, key or token (env) as `p`, through another port.
  const viaPort = (p: SshPath, port: number): SshPath => ({ ...(p.name === 'direct' ? directAt(port) : proxyAt(port, token)), env: p.env });
  let extraDaemons = 0;
  const extraDaemon = async ({ flags = [], nodeArgs = [] }: { flags?: string[]; nodeArgs?: string[] }): Promise<ExtraDaemon> => {
    const keyDir = fs.mkdtempSync(path.join(tmp, 'daemon-keys-'));
    for (const f of fs.readdirSync(proxy.keyDir)) fs.copyFileSync(path.join(proxy.keyDir, f), path.join(keyDir, f));
    const other = await startDaemon(`jsp-bench-proxy-${++extraDaemons}`, flags, nodeArgs, keyDir);
    return { pid: other.proxy.child.pid!, path: proxyAt(other.proxy.port, token, other), stop: () => other.proxy.stop() };
  };
  return { hub, user, token, proxy, direct, tmp, directPath, proxyPath, proxyKeyPath, viaPort, extraDaemon, cgroups };
}

