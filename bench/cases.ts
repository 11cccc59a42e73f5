// The measurements. Each takes an SshPath, so the same code runs direct and
// through the proxy; run.ts alternates the two.
import crypto from 'node:crypto';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { QUIET_MS } from '../lib/quietgc.js';
import { scrapeMetrics } from '../test/helpers/metrics.js';
import { waitFor } from '../test/helpers/wait.js';
import { finished, spawnTracked } from './children.js';
import type { SshPath } from './env.js';
import { fmt, MiB } from './stats.js';
import { cpuDelta, cpuTimes, descendants, hostStealSeconds, processState, pssKb, statusKb } from './procfs.js';

/** One timed run of one case on one path. */
export interface Run {
  path: 'direct' | 'proxy';
  seconds: number;
  /** Payload bytes moved (0 for latency). */
  bytes: number;
  /**
   * CPU seconds: the daemon itself (proxy path only); the sshd processes and
   * the remote commands they ran; the client side (ssh, sftp, askpass, head, wc).
   */
  cpu: { proxy?: number; proxyUser?: number; sshd: number; client: number };
  /** The host's steal time while the body ran, seconds over all CPUs (hostStealSeconds). */
  stealSeconds: number;
  /** Anything case-specific (memory figures of the idle case, ...). */
  extra?: Record<string, number>;
}

/**
 * What a case's body reports: the payload bytes, anything case-specific, and
 * its own clock where the time around the body would include set-up (the
 * parallel case starts its clients before its clock runs).
 */
export interface Moved {
  bytes: number;
  extra?: Record<string, number>;
  seconds?: number;
}

/**
 * Waits until the server side has no sshd processes (zombies included) left
 * from earlier runs, other than `keep` (those of sessions held open on purpose).
 */
export async function quiesce(p: SshPath, timeoutMs = 20_000, keep: ReadonlySet<number> = new Set()): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (descendants(p.serverPid, 'sshd', true).every((pid) => keep.has(pid))) return true;
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

/**
 * Times `body` on path `p` (or takes the body's own clock, `Moved.seconds`)
 * and charges CPU: the server process's own time and
 * its reaped children's (sshd), and this process's reaped children (clients).
 * Waits for the server side to settle first, so that late sshd exits are
 * counted in the run that caused them.
 */
export async function measure(
  p: SshPath,
  body: () => Promise<Moved>,
  settleMs = 20_000,
  keep: ReadonlySet<number> = new Set(),
): Promise<Run> {
  if (!(await quiesce(p, settleMs, keep))) console.warn(`  warning: ${p.name}: sshd processes from an earlier run are still alive`);
  const server0 = p.serverCpu();
  const client0 = cpuTimes('self');
  const steal0 = hostStealSeconds();
  const t0 = performance.now();
  const moved = await body();
  const seconds = moved.seconds ?? (performance.now() - t0) / 1000;
  const stealSeconds = hostStealSeconds() - steal0;
  const { bytes, extra } = moved;
  if (!(await quiesce(p, settleMs, keep))) console.warn(`  warning: ${p.name}: sshd processes still alive ${settleMs / 1000} s after the run`);
  const server1 = p.serverCpu();
  const client = cpuDelta(client0, cpuTimes('self')).children;
  const total = server1.total - server0.total;
  const cpu =
    server0.daemon !== undefined
      ? {
          proxy: server1.daemon! - server0.daemon,
          proxyUser: server1.daemonUser! - server0.daemonUser!,
          sshd: total - (server1.daemon! - server0.daemon),
          client,
        }
      : { sshd: total, client };
  return { path: p.name, seconds, bytes, cpu, stealSeconds, extra };
}

function check(ok: boolean, what: string, detail: string): void {
  if (!ok) throw new Error(`${what}: ${detail}`);
}

const BULK_TIMEOUT_MS = 15 * 60_000;

/** ssh's option for `cipher`: none for 'default', which leaves the client its own list. */
function cipherOption(cipher: string): string[] {
  return cipher === 'default' ? [] : ['-c', cipher];
}

/** `ssh host 'head -c N /dev/zero'` into `wc -c` locally. */
export async function download(p: SshPath, cipher: string, bytes: number): Promise<{ bytes: number }> {
  const wc = spawnTracked('wc', ['-c'], { stdio: ['pipe', 'pipe', 'ignore'] });
  const ssh = spawnTracked('ssh', [...p.sshArgs(cipherOption(cipher)), p.destination, `head -c ${bytes} /dev/zero`], {
    stdio: ['ignore', wc.stdin!, 'pipe'],
    env: p.env,
  });
  wc.stdin!.destroy(); // ssh holds the only write end now
  const [s, w] = await Promise.all([finished(ssh, BULK_TIMEOUT_MS, 'ssh download'), finished(wc, BULK_TIMEOUT_MS, 'wc')]);
  check(s.code === 0, `${p.name} download`, `ssh exit ${s.code ?? s.signal}: ${s.stderr.trim()}`);
  check(Number(w.stdout.trim()) === bytes, `${p.name} download`, `received ${w.stdout.trim()} bytes, expected ${bytes}`);
  return { bytes };
}

/** `head -c N /dev/zero | ssh host 'wc -c'`: the remote count proves every byte arrived. */
export async function upload(p: SshPath, cipher: string, bytes: number): Promise<{ bytes: number }> {
  const head = spawnTracked('head', ['-c', String(bytes), '/dev/zero'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const ssh = spawnTracked('ssh', [...p.sshArgs(cipherOption(cipher)), p.destination, 'wc -c'], {
    stdio: [head.stdout!, 'pipe', 'pipe'],
    env: p.env,
  });
  head.stdout!.destroy();
  const [s] = await Promise.all([finished(ssh, BULK_TIMEOUT_MS, 'ssh upload'), finished(head, BULK_TIMEOUT_MS, 'head')]);
  check(s.code === 0, `${p.name} upload`, `ssh exit ${s.code ?? s.signal}: ${s.stderr.trim()}`);
  check(Number(s.stdout.trim()) === bytes, `${p.name} upload`, `remote counted ${s.stdout.trim()} bytes, expected ${bytes}`);
  return { bytes };
}

async function sftpBatch(p: SshPath, cipher: string, batch: string, batchFile: string): Promise<void> {
  fs.writeFileSync(batchFile, batch);
  const sftp = spawnTracked('sftp', [...p.sftpArgs(cipherOption(cipher)), '-b', batchFile, p.destination], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: p.env,
  });
  const r = await finished(sftp, BULK_TIMEOUT_MS, 'sftp');
  check(r.code === 0, `${p.name} sftp`, `exit ${r.code ?? r.signal}: ${r.stderr.trim()}`);
}

/**
 * sftp get of a remote N-byte file into a local file that is checked and
 * removed right after; on tmpfs (/dev/shm) when there is one, so that no disk
 * writeback runs into later cases.
 */
export async function sftpGet(p: SshPath, cipher: string, bytes: number, remoteName: string, localDir: string): Promise<{ bytes: number }> {
  const dir = fs.existsSync('/dev/shm') ? '/dev/shm' : localDir;
  const local = path.join(dir, `jsp-bench-sftp-get-${process.pid}-${p.name}.bin`);
  try {
    await sftpBatch(p, cipher, `get ${remoteName} ${local}\n`, path.join(localDir, 'get.batch'));
    const size = fs.statSync(local).size;
    check(size === bytes, `${p.name} sftp get`, `got ${size} bytes, expected ${bytes}`);
  } finally {
    fs.rmSync(local, { force: true });
  }
  return { bytes };
}

/** sftp put of a local N-byte file into the user's home; removed right after. */
export async function sftpPut(p: SshPath, cipher: string, bytes: number, localFile: string, home: string, localDir: string): Promise<{ bytes: number }> {
  const remoteName = `bench-put-${p.name}.bin`;
  const remote = path.join(home, remoteName);
  try {
    await sftpBatch(p, cipher, `put ${localFile} ${remoteName}\n`, path.join(localDir, 'put.batch'));
    const size = fs.statSync(remote).size;
    check(size === bytes, `${p.name} sftp put`, `remote file has ${size} bytes, expected ${bytes}`);
  } finally {
    fs.rmSync(remote, { force: true });
  }
  return { bytes };
}

/** `ssh host true`. */
export async function trueCommand(p: SshPath): Promise<{ bytes: number }> {
  const ssh = spawnTracked('ssh', [...p.sshArgs(), p.destination, 'true'], { stdio: ['ignore', 'pipe', 'pipe'], env: p.env });
  const r = await finished(ssh, 60_000, 'ssh true');
  check(r.code === 0, `${p.name} ssh true`, `exit ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return { bytes: 0 };
}

/** The key exchange method `ssh` negotiates on `p` (from `ssh -v`): the report says it, for both paths. */
export async function keyExchange(p: SshPath): Promise<string> {
  const ssh = spawnTracked('ssh', [...p.sshArgs(['-v']), p.destination, 'true'], { stdio: ['ignore', 'pipe', 'pipe'], env: p.env });
  const r = await finished(ssh, 60_000, 'ssh -v true');
  check(r.code === 0, `${p.name} ssh -v true`, `exit ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return /kex: algorithm: (\S+)/.exec(r.stderr)?.[1] ?? 'unknown';
}

/** How long one echo may take before the case fails (a lost line, not a slow one). */
const ECHO_TIMEOUT_MS = 10_000;

/**
 * Keystroke echo: `echoes` short lines sent one at a time, 3-7 ms apart,
 * through `cat` in one channel of a ControlMaster connection, each timed
 * until it comes back. With `download`, another channel of the same
 * connection streams `head -c 100G /dev/zero` meanwhile, so the echoes
 * travel behind bulk data as they would in a terminal next to a transfer
 * (where the proxy's batched reads can hold them back: bench/README.md,
 * "A full read per wake-up"). Returns the echoes' median and p90 in ms, and
 * the download's rate.
 */
export async function keystrokeEcho(p: SshPath, cipher: string, echoes: number, download: boolean, dir: string): Promise<{ bytes: number; extra: Record<string, number> }> {
  const control = path.join(dir, `echo-${p.name}-${process.pid}.ctl`);
  const master = spawnTracked('ssh', [...p.sshArgs(['-M', '-S', control, '-N', '-c', cipher]), p.destination], { stdio: ['ignore', 'ignore', 'pipe'], env: p.env });
  const masterDone = finished(master, 10 * 60_000, 'ssh control master');
  let bulk: ChildProcess | undefined;
  let bulkDone: Promise<unknown> | undefined;
  try {
    const deadline = Date.now() + 30_000;
    while (!fs.existsSync(control)) {
      check(master.exitCode === null && Date.now() < deadline, `${p.name} echo`, 'the control master did not come up');
      await sleep(10);
    }
    let received = 0;
    if (download) {
      bulk = spawnTracked('ssh', [...p.sshArgs(['-S', control]), p.destination, 'head -c 100G /dev/zero'], { stdio: ['ignore', 'pipe', 'ignore'], env: p.env });
      bulk.stdout!.on('data', (chunk: Buffer) => (received += chunk.length));
      bulkDone = new Promise((resolve) => bulk!.once('close', resolve));
      while (received < 64 * MiB) {
        check(bulk.exitCode === null && Date.now() < deadline, `${p.name} echo`, 'the download did not start');
        await sleep(10);
      }
    }
    const cat = spawnTracked('ssh', [...p.sshArgs(['-S', control]), p.destination, 'cat'], { stdio: ['pipe', 'pipe', 'ignore'], env: p.env });
    const catDone = finished(cat, 10 * 60_000, 'ssh cat');
    let echoed = '';
    let arrived: (() => void) | undefined;
    cat.stdout!.on('data', (text: string) => {
      echoed += text;
      arrived?.();
    });
    const echo = async (line: string): Promise<number> => {
      const expected = echoed.length + line.length;
      const t0 = performance.now();
      const back = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${p.name} echo: no echo within ${ECHO_TIMEOUT_MS / 1000} s`)), ECHO_TIMEOUT_MS);
        arrived = () => {
          if (echoed.length < expected) return;
          clearTimeout(timer);
          resolve();
        };
      });
      cat.stdin!.write(line);
      await back;
      return performance.now() - t0;
    };
    await echo('ready\n'); // the channel is open and cat runs
    const times: number[] = [];
    const r0 = received;
    const t0 = performance.now();
    for (let i = 0; i < echoes; i++) {
      times.push(await echo(`${i}\n`));
      await sleep(3 + Math.random() * 4);
    }
    const mibps = (received - r0) / MiB / ((performance.now() - t0) / 1000);
    cat.stdin!.end();
    await catDone;
    check(echoed === ['ready', ...times.map((_, i) => String(i))].map((l) => `${l}\n`).join(''), `${p.name} echo`, 'the lines came back altered');
    times.sort((a, b) => a - b);
    return { bytes: 0, extra: { medianMs: times[Math.floor(times.length / 2)]!, p90Ms: times[Math.floor(times.length * 0.9)]!, ...(download ? { downloadMiBps: mibps } : {}) } };
  } finally {
    bulk?.kill();
    master.kill();
    await Promise.all([bulkDone, masterDone.catch(() => undefined)]);
  }
}

/** How long a batch of clients started stopped may take to reach their stop. */
const STOPPED_TIMEOUT_MS = 60_000;

/** `cmd args`, started stopped: a shell stops itself and, once continued (SIGCONT), becomes the command. */
function spawnStopped(cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  return spawnTracked('sh', ['-c', 'kill -STOP $$ && exec "$@"', 'sh', cmd, ...args], options);
}

/** Resolves once every child is stopped; rejects if one ended instead, or after `timeoutMs`. */
async function untilStopped(children: ChildProcess[], timeoutMs: number): Promise<void> {
  const outcome = await waitFor(
    () => {
      const ended = children.find((c) => c.exitCode !== null || c.signalCode !== null);
      if (ended) return `a client ended before it was continued: ${ended.exitCode ?? ended.signalCode}`;
      return children.every((c) => processState(c.pid!) === 'T') ? 'stopped' : undefined;
    },
    { timeoutMs, intervalMs: 10, what: `${children.length} clients to stop` },
  );
  if (outcome !== 'stopped') throw new Error(outcome);
}

/**
 * `sessions` parallel connections, each piping the same `bytes`-byte random
 * file into a remote `openssl dgst -sha256` (coreutils sha256sum runs at
 * ~190 MB/s here without SHA-NI and would be the bottleneck); every digest
 * must match the local one. Meanwhile a probe measures how long a new client
 * waits for the server's SSH identification line (see bannerProbe).
 */
export async function parallelChecksums(p: SshPath, sessions: number, file: string, bytes: number, digest: string): Promise<Moved & { extra: Record<string, number> }> {
  // Node's spawn returns once its child has exec'd. Started one after the
  // other, 100 direct clients took 14 s to start, ~140 ms each on cores
  // already busy with the first sessions (through the proxy, whose logins
  // queue in one process, 0.9 s), so the case was not 100 sessions at once.
  // Every client now starts stopped, and the clock starts as all continue.
  const clients = Array.from({ length: sessions }, (_, i) => {
    const fd = fs.openSync(file, 'r');
    try {
      // Node accepts one connection per event-loop turn; before the daemon
      // bounded its turns (lib/turnbudget.ts) the last of 100 simultaneous
      // logins waited up to ~17 s for the banner, close to the helpers' 20 s.
      const ssh = spawnStopped('ssh', [...p.sshArgs(['-o', 'ConnectTimeout=120']), p.destination, 'openssl dgst -sha256 -r'], { stdio: [fd, 'pipe', 'pipe'], env: p.env });
      return { ssh, done: finished(ssh, BULK_TIMEOUT_MS, `session ${i}`) };
    } finally {
      fs.closeSync(fd);
    }
  });
  try {
    await untilStopped(clients.map((c) => c.ssh), STOPPED_TIMEOUT_MS);
  } catch (err) {
    for (const { ssh } of clients) ssh.kill('SIGKILL');
    throw err;
  }
  const started = performance.now();
  for (const { ssh } of clients) ssh.kill('SIGCONT');
  const perSession: number[] = [];
  const jobs = clients.map(async ({ done }, i) => {
    const r = await done;
    perSession.push((performance.now() - started) / 1000);
    check(r.code === 0, `${p.name} session ${i}`, `exit ${r.code ?? r.signal}: ${r.stderr.trim()}`);
    const remote = r.stdout.trim().split(/\s+/)[0];
    check(remote === digest, `${p.name} session ${i}`, `remote sha256 ${remote} != local ${digest}`);
  });
  const probe = bannerProbe(p.port);
  const results = await Promise.allSettled(jobs);
  // The first probe starts together with the sessions' logins and waits behind
  // them (1788 ms through the proxy, 874 direct, in a run where no later
  // probe waited over 34 and 175 ms): a login storm, reported apart from the
  // logins that arrive while the transfers run.
  // A probe that got no banner (refused, reset, closed) counts as failed, not as no probe.
  const [duringLogins, ...duringTransfers] = await probe.stop();
  const waits = duringTransfers.filter((w) => !Number.isNaN(w)).sort((a, b) => a - b);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length > 0) throw new Error(`${failed.length}/${sessions} sessions failed; first: ${(failed[0]!.reason as Error).message}`);
  perSession.sort((a, b) => a - b);
  const at = (q: number) => waits[Math.min(waits.length - 1, Math.floor(q * waits.length))] ?? NaN;
  return {
    bytes: sessions * bytes,
    seconds: perSession[perSession.length - 1]!,
    extra: {
      firstDoneSeconds: perSession[0]!,
      lastDoneSeconds: perSession[perSession.length - 1]!,
      bannerWaitDuringLoginsMs: duringLogins ?? NaN,
      bannerProbes: waits.length,
      bannerProbesFailed: duringTransfers.length - waits.length,
      bannerWaitMedianMs: at(0.5),
      bannerWaitP90Ms: at(0.9),
      bannerWaitMaxMs: waits[waits.length - 1] ?? NaN,
    },
  };
}

/** Pause between two probes: they measure the server under load without adding to it. */
export const PROBE_INTERVAL_MS = 250;

/**
 * Connects to `port` again and again, one connection at a time, and records
 * how long each waited for the server's identification line ("SSH-2.0-..."):
 * what a user logging in while others move data waits before anything happens.
 * stop() ends the probing and returns the waits in milliseconds, in the order
 * of the probes, NaN for a probe that got no identification line.
 */
function bannerProbe(port: number): { stop(): Promise<number[]> } {
  const waits: number[] = [];
  let stopped = false;
  /** Milliseconds to the identification line, or NaN if the connection ended or failed without one. */
  const once = () =>
    new Promise<number>((resolve) => {
      const started = performance.now();
      const socket = net.connect(port, '127.0.0.1');
      let received = '';
      const done = (wait: number) => {
        socket.destroy();
        resolve(wait);
      };
      socket.on('data', (chunk: Buffer) => {
        received += chunk.toString('latin1');
        if (!received.includes('\n')) return;
        done(received.startsWith('SSH-') ? performance.now() - started : NaN);
      });
      socket.on('error', () => done(NaN));
      socket.on('close', () => done(NaN));
    });
  const loop = async () => {
    while (!stopped) {
      waits.push(await once());
      await sleep(PROBE_INTERVAL_MS);
    }
  };
  const running = loop();
  return {
    stop: async () => {
      stopped = true;
      await running;
      return waits;
    },
  };
}

/** Writes `bytes` random bytes to `file` and returns their sha256. */
export function randomFile(file: string, bytes: number): string {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'w', 0o644);
  try {
    const chunk = 4 * 1024 * 1024;
    for (let left = bytes; left > 0; left -= chunk) {
      const buf = crypto.randomBytes(Math.min(chunk, left));
      hash.update(buf);
      fs.writeSync(fd, buf);
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** Sums Pss (kB) over pids. */
function pssSum(pids: number[]): number {
  return pids.reduce((a, pid) => a + pssKb(pid), 0);
}

/** How long settleDaemon waits at most for steady memory. */
const SETTLE_TIMEOUT_MS = 60_000;
/** By then the daemon's own collection after the last burst has run (it checks once a second). */
const QUIET_COLLECTION_WAIT_MS = QUIET_MS + 3_000;
/** RSS counts as steady when it moved less than this over STEADY_SAMPLES one-second samples. */
const STEADY_TOLERANCE_KB = 1024;
const STEADY_SAMPLES = 3;

/** The daemon's metrics (names without the `jupyter_ssh_proxy_` prefix, with labels); throws on a missing one. */
async function daemonMetrics(origin: string): Promise<(name: string) => number> {
  const samples = await scrapeMetrics(origin);
  return (name) => {
    const value = samples.get(`jupyter_ssh_proxy_${name}`);
    if (value === undefined) throw new Error(`no jupyter_ssh_proxy_${name} in ${origin}/metrics`);
    return value;
  };
}

/** The daemon's count of V8 full (mark-compact) collections. */
async function majorGcCount(origin: string): Promise<number> {
  return (await daemonMetrics(origin))('nodejs_gc_duration_seconds_count{kind="major"}');
}

/**
 * Waits until the daemon's memory reflects what is live, not what the last
 * case freed: buffers of finished transfers and objects of closed sessions
 * stay resident until a full collection frees them, and jemalloc then
 * returns their pages within a second. The daemon runs one itself 5 s after
 * a burst (lib/quietgc.ts), which may have come before this call. So: wait
 * for a full collection after this call, or long enough that the daemon's
 * own has come, then for RSS to hold still. Returns the seconds waited; -1
 * when RSS was still moving at the deadline (the reading is then taken as
 * is, and the log says so). No-op for the direct path.
 */
export async function settleDaemon(p: SshPath, log: (line: string) => void): Promise<number> {
  if (p.name !== 'proxy' || !p.metricsOrigin) return 0;
  const origin = p.metricsOrigin;
  const t0 = performance.now();
  const start = await majorGcCount(origin);
  const samples: number[] = [];
  while (performance.now() - t0 < SETTLE_TIMEOUT_MS) {
    await sleep(1000);
    const collected = (await majorGcCount(origin)) !== start || performance.now() - t0 >= QUIET_COLLECTION_WAIT_MS;
    if (!collected) continue;
    samples.push(statusKb(p.serverPid, 'VmRSS'));
    const recent = samples.slice(-STEADY_SAMPLES);
    if (recent.length === STEADY_SAMPLES && Math.max(...recent) - Math.min(...recent) < STEADY_TOLERANCE_KB) {
      return (performance.now() - t0) / 1000;
    }
  }
  log(`    daemon memory not settled after ${SETTLE_TIMEOUT_MS / 1000} s (RSS still moving): reading it as it is`);
  return -1;
}

/** How often holdSessions reads the daemon's RSS. */
const HOLD_SAMPLE_MS = 5_000;

/** Packets the daemon forwarded between legs so far, all paths together. */
async function packetsForwarded(origin: string): Promise<number> {
  let total = 0;
  for (const [name, value] of await scrapeMetrics(origin)) {
    if (name.startsWith('jupyter_ssh_proxy_packets_forwarded_total{')) total += value;
  }
  return total;
}

/**
 * Keeps the sessions open and quiet for `seconds`, reading the daemon's RSS
 * every HOLD_SAMPLE_MS: the first reading and the highest, and the packets
 * it forwarded meanwhile. Sessions measured as soon as they are up have not
 * yet seen the internal sshd's keepalives (one per 60 to 120 s of silence
 * per session, and the client's answer), which the daemon relays for as
 * long as they stay open.
 */
async function holdSessions(
  pid: number,
  origin: string,
  seconds: number,
  log: (line: string) => void,
): Promise<{ firstKb: number; maxKb: number; packets: number }> {
  const packetsBefore = await packetsForwarded(origin);
  const firstKb = statusKb(pid, 'VmRSS');
  let maxKb = firstKb;
  const start = performance.now();
  const end = start + seconds * 1000;
  let samples = 0;
  while (performance.now() < end) {
    await sleep(Math.min(HOLD_SAMPLE_MS, end - performance.now()));
    const kb = statusKb(pid, 'VmRSS');
    maxKb = Math.max(maxKb, kb);
    if (++samples % 6 === 0) log(`    held ${fmt((performance.now() - start) / 1000, 0)} s: daemon RSS ${fmt(kb / 1024, 1)} MiB`);
  }
  return { firstKb, maxKb, packets: (await packetsForwarded(origin)) - packetsBefore };
}

/** Idle sessions held open; close() ends their clients and waits for them. */
export interface OpenSessions {
  /** The server side's sshd processes once all sessions were up (measure() leaves them be). */
  sshdPids: ReadonlySet<number>;
  close(): Promise<void>;
}

/**
 * Opens `sessions` concurrent idle sessions (`echo ready; exec sleep
 * infinity`), `parallel` at a time; resolves once every one printed "ready".
 */
export async function openIdleSessions(
  p: SshPath,
  sessions: number,
  parallel: number,
  log: (line: string) => void,
): Promise<OpenSessions> {
  const clients: ReturnType<typeof spawnTracked>[] = [];
  const close = async () => {
    for (const c of clients) c.kill('SIGTERM');
    await Promise.all(clients.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
  };
  let next = 0;
  let up = 0;
  const openOne = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const ssh = spawnTracked(
        'ssh',
        [...p.sshArgs(['-o', 'ServerAliveInterval=0']), p.destination, 'echo ready; exec sleep infinity'],
        { stdio: ['ignore', 'pipe', 'pipe'], env: p.env },
      );
      clients.push(ssh);
      let err = '';
      ssh.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
      ssh.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) resolve();
      });
      ssh.once('exit', (code, signal) => reject(new Error(`idle session ${i} ended (${code ?? signal}) before it was ready: ${err.trim()}`)));
      setTimeout(() => reject(new Error(`idle session ${i} not ready after 120 s`)), 120_000).unref();
    });
  const worker = async () => {
    while (next < sessions) {
      const i = next++;
      await openOne(i);
      up++;
      if (up % 250 === 0) log(`    ${p.name}: ${up}/${sessions} sessions up`);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(parallel, sessions) }, worker));
  } catch (err) {
    await close();
    throw err;
  }
  return { sshdPids: new Set(descendants(p.serverPid, 'sshd')), close };
}

/**
 * `sessions` concurrent idle sessions (see openIdleSessions). Reports the
 * connect time of all of them and, once all are up, the server side's memory:
 * the daemon's VmRSS (proxy) and the Pss of the sshd processes (both paths).
 */
export async function idleSessions(
  p: SshPath,
  sessions: number,
  parallel: number,
  holdSeconds: number,
  log: (line: string) => void,
): Promise<{ bytes: number; extra: Record<string, number> }> {
  const proxyPid = p.name === 'proxy' ? p.serverPid : undefined;
  const settledBefore = await settleDaemon(p, log);
  const rssBefore = proxyPid ? statusKb(proxyPid, 'VmRSS') : 0;
  const sshdPssBefore = pssSum(descendants(p.serverPid, 'sshd'));
  const t0 = performance.now();
  const open = await openIdleSessions(p, sessions, parallel, log);
  try {
    const connectSeconds = (performance.now() - t0) / 1000;
    const settledWith = await settleDaemon(p, log);
    const held = proxyPid && p.metricsOrigin ? await holdSessions(proxyPid, p.metricsOrigin, holdSeconds, log) : undefined;
    // Where the RSS is: V8's heap (used, and reserved) and its external memory (ArrayBuffers).
    const metric = p.metricsOrigin ? await daemonMetrics(p.metricsOrigin) : undefined;
    const heap: Record<string, number> = metric
      ? {
          daemonHeapUsedKb: metric('nodejs_heap_size_used_bytes') / 1024,
          daemonHeapTotalKb: metric('nodejs_heap_size_total_bytes') / 1024,
          daemonExternalKb: metric('nodejs_external_memory_bytes') / 1024,
        }
      : {};
    const rssKb = proxyPid ? statusKb(proxyPid, 'VmRSS') : 0;
    const hwmKb = proxyPid ? statusKb(proxyPid, 'VmHWM') : 0;
    const anonKb = proxyPid ? statusKb(proxyPid, 'RssAnon') : 0;
    const fileKb = proxyPid ? statusKb(proxyPid, 'RssFile') : 0;
    const sshdPids = descendants(p.serverPid, 'sshd');
    const sshdPssKb = pssSum(sshdPids) - sshdPssBefore;
    return {
      bytes: 0,
      extra: {
        sessions,
        connectSeconds,
        sessionsPerSecond: sessions / connectSeconds,
        daemonSettleSecondsBefore: settledBefore,
        daemonSettleSecondsWith: settledWith,
        ...heap,
        daemonRssBeforeKb: rssBefore,
        daemonRssKb: rssKb,
        daemonRssAnonKb: anonKb,
        daemonRssFileKb: fileKb,
        daemonHwmKb: hwmKb,
        daemonRssPerSessionKb: proxyPid ? (rssKb - rssBefore) / sessions : 0,
        ...(held ? { holdSeconds, daemonRssSettledKb: held.firstKb, daemonRssHoldMaxKb: held.maxKb, holdPacketsForwarded: held.packets } : {}),
        sshdProcesses: sshdPids.length,
        sshdPssKb,
        sshdPssPerSessionKb: sshdPssKb / sessions,
        daemonPssKb: proxyPid ? pssKb(proxyPid) : 0,
      },
    };
  } finally {
    await open.close();
  }
}

/**
 * A transfer that also reports, for the proxy path, the daemon's full
 * (mark-compact) collections during it: with many sessions open, each one
 * marks all of their objects.
 */
export async function countingGcs(
  p: SshPath,
  transfer: () => Promise<Moved>,
): Promise<Moved & { extra: Record<string, number> }> {
  const gcs = p.metricsOrigin ? await majorGcCount(p.metricsOrigin) : 0;
  const moved = await transfer();
  const extra: Record<string, number> = { ...moved.extra };
  if (p.metricsOrigin) extra.daemonFullGcs = (await majorGcCount(p.metricsOrigin)) - gcs;
  return { bytes: moved.bytes, extra, seconds: moved.seconds };
}
