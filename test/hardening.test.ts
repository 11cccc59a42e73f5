// Pre-auth defences and lifecycle against the real daemon, Hub, ssh and sshd.
import { expect } from 'chai';
import type { ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { useEnv } from './helpers/fixture.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { startProxy, type ProxyProcess } from './helpers/proxy.js';
import { run, ssh } from './helpers/ssh.js';
import { ssh2Login } from './helpers/ssh2client.js';
import { childrenNamed } from './helpers/procs.js';
import { waitFor } from './helpers/wait.js';

const QUIET = ['-o', 'LogLevel=ERROR'];

/** A TCP connection from `localAddress` to the daemon, resolved once connected. */
function connectFrom(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    // Flowing, so that the daemon's FIN is seen and 'close' fires.
    socket.resume();
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

describe('hardening: per-source penalties', function () {
  const env = useEnv();
  let proxy: ProxyProcess;
  let origin: string;
  before(async function () {
    // No exempt list here: 127.0.0.1 is the attacker.
    proxy = await startProxy(env.hub.url, [
      '--per-source-penalties', 'authfail:5 noauth:1 grace-exceeded:10 malformed:90 max:600 min:15',
      '--metrics-ip', '127.0.0.1', '--metrics-port', '0',
    ]);
    origin = await waitFor(() => metricsOrigin(proxy.logs()), { timeoutMs: 10_000, what: 'the metrics address' });
  });
  after(async () => proxy?.stop());

  it('refuses a source after a run of bad tokens, before asking the Hub, while another address logs in', async function () {
    this.timeout(180_000);
    const metricValue = async (key: string) => (await scrapeMetrics(origin)).get(key) ?? 0;
    const hubCallsBefore = await metricValue('jupyter_ssh_proxy_hub_request_duration_seconds_count{endpoint="user"}');
    let prompted = 0;
    let refused = 0;
    for (let i = 0; i < 50; i++) {
      const bad = `bad-token-${crypto.randomBytes(8).toString('hex')}`;
      const r = await ssh(proxy.port, env.user.name, bad, ['true'], ['-o', 'NumberOfPasswordPrompts=1']);
      expect(r.code).to.equal(255);
      if (r.stderr.includes('JupyterHub did not accept that token')) prompted++;
      else refused++;
    }
    // authfail:5 and min:15: from the fourth connection on, connections are
    // refused at accept (the fourth may race the third one's close).
    expect(prompted).to.be.within(3, 4);
    expect(refused).to.equal(50 - prompted);
    const hubCalls = (await metricValue('jupyter_ssh_proxy_hub_request_duration_seconds_count{endpoint="user"}')) - hubCallsBefore;
    expect(hubCalls, 'Hub requests for 50 bad tokens').to.be.at.most(6);
    expect(await metricValue('jupyter_ssh_proxy_refusals_total{reason="penalty"}')).to.equal(refused);
    expect(proxy.logs()).to.match(/source 127\.0\.0\.1 penalized \(authfail\): refused for (1[5-9]|20)s/);
    // Refusals are logged rate-limited, not once per connection.
    expect(proxy.logs().split('\n').filter((l) => l.includes('(penalty)')).length).to.be.below(5);

    const good = await ssh(proxy.port, env.user.name, env.token, ['echo from-127.0.0.2'], [...QUIET, '-b', '127.0.0.2']);
    expect(good.code, good.stderr).to.equal(0);
    expect(good.stdout.toString()).to.equal('from-127.0.0.2\n');
  });

  it('penalizes a source that sends garbage (malformed)', async function () {
    const socket = await connectFrom(proxy.port, '127.0.0.4');
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((resolve) => socket.once('close', resolve));
    await waitFor(() => /source 127\.0\.0\.4 penalized \(malformed\)/.test(proxy.logs()), { timeoutMs: 5000, what: 'the penalty' });
    const again = await connectFrom(proxy.port, '127.0.0.4');
    let received = 0;
    again.on('data', (chunk: Buffer) => (received += chunk.length));
    await new Promise((resolve) => again.once('close', resolve));
    expect(received, 'refused without even a version line').to.equal(0);
  });
});

describe('hardening: log lines a client cannot forge', function () {
  const env = useEnv();

  it('keeps a login name with line breaks and terminal escapes within its own log entry', async function () {
    const forged = '12:34:56.789 [JupyterSSHProxy] info: login accepted: user=forged';
    const before = env.proxy.logs().length;
    const outcome = await ssh2Login(env.proxy.port, `alice\n${forged}\r\u2028${forged}\x1b[2J`, { password: 'not-a-token' });
    expect(outcome).to.equal('All configured authentication methods failed');
    await waitFor(() => env.proxy.logs().slice(before).includes('login refused') || undefined, { timeoutMs: 5000, what: 'the refusal in the log' });
    const logged = env.proxy.logs().slice(before);
    expect(logged).to.include(`user=alice\n    ${forged}?\n    ${forged}?[2J`);
    expect(logged.split('\n').filter((line) => line.startsWith(forged))).to.deep.equal([]);
  });
});

describe('hardening: slow and idle connections', function () {
  const env = useEnv();
  let proxy: ProxyProcess;
  before(async function () {
    proxy = await startProxy(env.hub.url, ['--login-grace-time', '4', '--max-startups', '1000:100:1000', '--per-source-penalty-exempt-list', '127.0.0.1']);
  });
  after(async () => proxy?.stop());

  it('closes 500 connections that never send a version line at the grace time, while real logins succeed', async function () {
    this.timeout(120_000);
    const pid = proxy.child.pid!;
    const baseline = rssKiB(pid);
    const sockets = await Promise.all(Array.from({ length: 500 }, () => connectFrom(proxy.port, '127.0.0.3')));
    const closedAt: number[] = [];
    const opened = Date.now();
    for (const s of sockets) {
      s.on('error', () => {});
      s.on('close', () => closedAt.push(Date.now() - opened));
    }
    const during = await env.ssh(['echo during'], QUIET);
    expect(during.code, during.stderr).to.equal(0);
    expect(during.stdout.toString()).to.equal('during\n');
    const rssWith500 = rssKiB(pid);
    await waitFor(() => closedAt.length === 500, { timeoutMs: 30_000, what: 'all 500 to be closed' });
    expect(Math.min(...closedAt)).to.be.at.least(3000);
    expect(Math.max(...closedAt)).to.be.below(15_000);
    // An idle pre-auth connection costs little.
    expect((rssWith500 - baseline) / 500, 'KiB per idle connection').to.be.below(200);
    expect(proxy.logs()).to.contain('penalized (grace-exceeded)');
  });

  it('refuses connections beyond --max-sessions', async function () {
    const small = await startProxy(env.hub.url, ['--max-sessions', '2']);
    try {
      const a = await connectFrom(small.port, '127.0.0.1');
      const b = await connectFrom(small.port, '127.0.0.1');
      await waitFor(() => (small.logs().match(/connection from/g) ?? []).length === 2, { timeoutMs: 5000, what: 'two connections' });
      const r = await ssh(small.port, env.user.name, env.token, ['true'], QUIET);
      expect(r.code).to.equal(255);
      expect(small.logs()).to.contain('(max_sessions)');
      a.destroy();
      b.destroy();
      await waitFor(async () => (await ssh(small.port, env.user.name, env.token, ['true'], QUIET)).code === 0, {
        timeoutMs: 10_000,
        what: 'a login once the two are gone',
      });
    } finally {
      await small.stop();
    }
  });
});

describe('hardening: faults behind the proxy', function () {
  const env = useEnv();

  it('closes the client leg with a message when sshd is killed in the middle of a transfer', async function () {
    const daemon = env.proxy.child.pid!;
    let received = 0;
    const transfer = ssh(env.proxy.port, env.user.name, env.token, ['head -c 4G /dev/zero'], [], {
      timeoutMs: 60_000,
      onSpawn: (child) => {
        child.stdin!.end();
        child.stdout!.on('data', (chunk: Buffer) => (received += chunk.length));
      },
    });
    // The sshd child runs in a process group of its own: kill all of it.
    const sshdGroup = await waitFor(
      () => childrenNamed(daemon, 'sshd')[0],
      { timeoutMs: 20_000, what: 'the sshd child' },
    );
    // Kill it in the middle of the transfer, not before it starts.
    await waitFor(() => received > 1024 * 1024, { timeoutMs: 20_000, what: 'data to flow' });
    process.kill(-sshdGroup, 'SIGKILL');
    const r = await transfer;
    expect(r.code).to.equal(255);
    expect(r.stderr).to.contain('The SSH server for your environment closed the connection');
    expect(r.stdout.length).to.be.greaterThan(0);
    expect(r.stdout.length).to.be.lessThan(4 * 1024 ** 3);
    // Everyone else is still served.
    const next = await env.ssh(['echo next'], QUIET);
    expect(next.stdout.toString()).to.equal('next\n');
  });
});

/**
 * A TCP relay between the OpenSSH client and the daemon, so that a test can
 * make the client vanish the two ways a network does: a reset, or silence
 * (half-open: nothing arrives, nothing is refused).
 */
async function startCutter(daemonPort: number): Promise<{
  port: number;
  /** The daemon side of the one relayed connection, once there is one. */
  daemonSide(): net.Socket | undefined;
  reset(): void;
  silence(): void;
  close(): void;
}> {
  let toDaemon: net.Socket | undefined;
  let fromClient: net.Socket | undefined;
  const server = net.createServer((client) => {
    fromClient = client;
    toDaemon = net.connect(daemonPort, '127.0.0.1');
    client.on('error', () => {});
    toDaemon.on('error', () => {});
    client.pipe(toDaemon);
    toDaemon.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    daemonSide: () => toDaemon,
    reset() {
      toDaemon!.resetAndDestroy();
      fromClient!.destroy();
    },
    silence() {
      // Both directions dropped, both sockets kept open and read (no backpressure, no FIN).
      fromClient!.unpipe(toDaemon!);
      toDaemon!.unpipe(fromClient!);
      fromClient!.resume();
      toDaemon!.resume();
    },
    close() {
      fromClient?.destroy();
      toDaemon?.destroy();
      server.close();
    },
  };
}

describe('hardening: clients that vanish', function () {
  // sshd's own keepalive finds a silent client: every second, given up after two.
  // (The default for the internal sshd is 60 s x 3; see lib/localsshd.ts.)
  const env = useEnv({ proxyArgs: ['--sshd-option', 'ClientAliveInterval=1', '--sshd-option', 'ClientAliveCountMax=2'] });

  /** A session through `cutter` that has started its command; resolves with the ssh result promise. */
  async function sessionThrough(cutter: { port: number }) {
    let output = '';
    let child: ChildProcess | undefined;
    const result = ssh(cutter.port, env.user.name, env.token, ['echo started; exec sleep 600'], QUIET, {
      timeoutMs: 60_000,
      onSpawn: (c) => {
        child = c;
        c.stdin!.end();
        c.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      },
    });
    await waitFor(() => output.includes('started'), { timeoutMs: 30_000, what: 'the session to start' });
    return { result, kill: () => child?.kill('SIGKILL') };
  }

  for (const how of ['reset', 'silence'] as const) {
    const what = how === 'reset' ? 'a TCP reset' : 'silence (half-open)';
    it(`reaps the upstream leg and the sshd child of a client that vanishes by ${what}`, async function () {
      this.timeout(60_000);
      const daemon = env.proxy.child.pid!;
      const cutter = await startCutter(env.proxy.port);
      const session = await sessionThrough(cutter);
      try {
        expect(childrenNamed(daemon, 'sshd'), "the session's sshd").to.have.length(1);
        const ended = env.proxy.logs().split('session ended').length;
        cutter[how]();
        await waitFor(() => childrenNamed(daemon, 'sshd').length === 0, { timeoutMs: 20_000, what: 'the sshd child to be reaped' });
        await waitFor(() => env.proxy.logs().split('session ended').length > ended, { timeoutMs: 10_000, what: 'the daemon to end the session' });
        // The daemon closed its side of the vanished client's connection too.
        const side = cutter.daemonSide()!;
        await waitFor(() => side.destroyed || side.readableEnded, { timeoutMs: 10_000, what: "the daemon's socket to close" });
      } finally {
        session.kill();
        await session.result.catch(() => undefined);
        cutter.close();
      }
      const next = await env.ssh(['echo next'], QUIET);
      expect(next.stdout.toString()).to.equal('next\n');
    });
  }
});

describe('hardening: a load balancer in front of the proxy that closes idle connections', function () {
  // As AWS's classic load balancer (60 s) or Azure's (4 min) do, here after 25 s; with the settings docs/deploy.md gives for it.
  const IDLE_TIMEOUT_MS = 25_000;
  const env = useEnv({ proxyArgs: ['--sshd-option', 'ClientAliveInterval=10', '--sshd-option', 'ClientAliveCountMax=9'] });

  it("keeps a session that is silent for longer: with ClientAliveInterval=10 the internal sshd's keepalives cross it every 10 to 20 s", async function () {
    this.timeout(90_000);
    let cut = false;
    const balancer = net.createServer((client) => {
      const daemon = net.connect(env.proxy.port, '127.0.0.1');
      for (const socket of [client, daemon]) {
        socket.on('error', () => undefined);
        socket.setTimeout(IDLE_TIMEOUT_MS, () => {
          cut = true;
          client.destroy();
          daemon.destroy();
        });
      }
      client.pipe(daemon);
      daemon.pipe(client);
    });
    await new Promise<void>((resolve) => balancer.listen(0, '127.0.0.1', resolve));
    try {
      const port = (balancer.address() as net.AddressInfo).port;
      const result = await ssh(port, env.user.name, env.token, [`sleep ${IDLE_TIMEOUT_MS / 1000 + 8}; echo still here`], QUIET);
      expect(cut, 'the balancer cut the connection').to.equal(false);
      expect(result.code, result.stderr.toString()).to.equal(0);
      expect(result.stdout.toString()).to.equal('still here\n');
    } finally {
      balancer.close();
    }
  });
});

describe('hardening: lifecycle', function () {
  const env = useEnv();
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-life-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  function exitOf(proxy: ProxyProcess): Promise<number | null> {
    return new Promise((resolve) => {
      if (proxy.child.exitCode !== null) resolve(proxy.child.exitCode);
      else proxy.child.once('exit', (code) => resolve(code));
    });
  }

  it('SIGTERM: stops accepting, lets a session finish, exits 0 and removes its pid file', async function () {
    const pidFile = path.join(dir, 'proxy.pid');
    const proxy = await startProxy(env.hub.url, ['--pid-file', pidFile, '--drain-timeout', '30']);
    try {
      expect(fs.readFileSync(pidFile, 'utf8')).to.equal(`${proxy.child.pid}\n`);
      const session = ssh(proxy.port, env.user.name, env.token, ['echo started; sleep 3; echo finished'], QUIET);
      await waitFor(() => proxy.logs().includes('session started'), { timeoutMs: 20_000, what: 'the session' });
      proxy.child.kill('SIGTERM');
      await waitFor(() => proxy.logs().includes('no new connections'), { timeoutMs: 5000, what: 'the drain' });
      // New connections are refused while the session runs on.
      const refused = await new Promise<boolean>((resolve) => {
        const s = net.connect(proxy.port, '127.0.0.1');
        s.once('connect', () => { s.destroy(); resolve(false); });
        s.once('error', () => resolve(true));
      });
      expect(refused).to.equal(true);
      const r = await session;
      expect(r.code).to.equal(0);
      expect(r.stdout.toString()).to.equal('started\nfinished\n');
      expect(await exitOf(proxy)).to.equal(0);
      expect(fs.existsSync(pidFile)).to.equal(false);
    } finally {
      await proxy.stop();
    }
  });

  it('SIGTERM while it starts: it stops once it listens, exits 0 and leaves no pid file or runtime folder', async function () {
    const pidFile = path.join(dir, 'proxy.pid');
    const runtimeDir = path.join(dir, 'run');
    let signalled = false;
    // The line logged just before it listens; the pid file is there by then.
    const proxy = await startProxy(env.hub.url, ['--pid-file', pidFile, '--runtime-dir', runtimeDir], {
      onOutput: (text) => {
        if (signalled || !text.includes('native crypto binding')) return;
        signalled = true;
        process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 'SIGTERM');
      },
    });
    try {
      expect(signalled).to.equal(true);
      expect(await exitOf(proxy)).to.equal(0);
      expect(proxy.logs()).to.include('SIGTERM: no new connections; shutting down');
      expect(fs.existsSync(pidFile)).to.equal(false);
      expect(fs.readdirSync(runtimeDir)).to.deep.equal([]);
    } finally {
      await proxy.stop();
    }
  });

  it('SIGTERM: after --drain-timeout, disconnects sessions with "Server shutting down"', async function () {
    const proxy = await startProxy(env.hub.url, ['--drain-timeout', '1']);
    try {
      const session = ssh(proxy.port, env.user.name, env.token, ['echo started; sleep 60'], []);
      await waitFor(() => proxy.logs().includes('session started'), { timeoutMs: 20_000, what: 'the session' });
      const signalled = Date.now();
      proxy.child.kill('SIGTERM');
      const r = await session;
      expect(r.code).to.equal(255);
      expect(r.stderr).to.contain('Server shutting down');
      expect(Date.now() - signalled).to.be.within(800, 10_000);
      expect(await exitOf(proxy)).to.equal(0);
    } finally {
      await proxy.stop();
    }
  });

  it('keeps serving when its log output goes away, and still stops cleanly', async function () {
    // Under /run, not /tmp: sshd's StrictModes refuses a world-writable
    // parent; traversable, for sshd reads authorized_keys as the user.
    const runtimeDir = fs.mkdtempSync('/run/jsp-life-');
    fs.chmodSync(runtimeDir, 0o755);
    const proxy = await startProxy(env.hub.url, ['--runtime-dir', runtimeDir]);
    try {
      expect(fs.readdirSync(runtimeDir)).to.have.length(1);
      const session = ssh(proxy.port, env.user.name, env.token, ['echo started; sleep 3; echo finished'], QUIET);
      await waitFor(() => proxy.logs().includes('session started'), { timeoutMs: 20_000, what: 'the session' });
      // Whatever read the daemon's standard output exits (a log shipper, `tee`):
      // its next log line, in the login below, fails with EPIPE.
      proxy.child.stdout!.destroy();
      const after = await ssh(proxy.port, env.user.name, env.token, ['echo ok'], QUIET);
      expect(after.code, after.stderr).to.equal(0);
      expect(after.stdout.toString()).to.equal('ok\n');
      expect(proxy.logs()).to.contain('jupyter_ssh_proxy: standard output failed (EPIPE): no more log lines; still serving');
      const r = await session;
      expect(r.code).to.equal(0);
      expect(r.stdout.toString()).to.equal('started\nfinished\n');
      expect(proxy.child.exitCode).to.equal(null);
      proxy.child.kill('SIGTERM');
      expect(await exitOf(proxy)).to.equal(0);
      expect(fs.readdirSync(runtimeDir)).to.deep.equal([]);
    } finally {
      await proxy.stop();
      fs.rmSync(runtimeDir, { recursive: true, force: true });
    }
  });

  it('keeps serving when the disk under its log file fills up', async function () {
    const disk = path.join(dir, 'disk');
    fs.mkdirSync(disk);
    const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', disk]);
    expect(mounted.code, mounted.stderr.toString()).to.equal(0);
    try {
      // 16 KiB left: the start-up lines fit, a few logins at debug level do not.
      fs.writeFileSync(path.join(disk, 'filler'), Buffer.alloc(48 * 1024));
      const proxy = await startProxy(env.hub.url, [], { stdoutFile: path.join(disk, 'proxy.log') });
      try {
        let logins = 0;
        while (!proxy.logs().includes('jupyter_ssh_proxy: standard output failed (ENOSPC): no more log lines; still serving')) {
          expect(logins, 'logins before the log filled the disk').to.be.below(100);
          const r = await ssh(proxy.port, env.user.name, env.token, ['true'], QUIET);
          expect(r.code, r.stderr).to.equal(0);
          logins++;
        }
        const after = await ssh(proxy.port, env.user.name, env.token, ['echo ok'], QUIET);
        expect(after.code, after.stderr).to.equal(0);
        expect(after.stdout.toString()).to.equal('ok\n');
        expect(proxy.child.exitCode).to.equal(null);
      } finally {
        await proxy.stop();
      }
    } finally {
      await run('umount', [disk]);
    }
  });

  it('SIGHUP: reloads host keys and the config file without dropping sessions; a bad config keeps the old one', async function () {
    const config = path.join(dir, 'proxy.yaml');
    fs.writeFileSync(config, 'max-auth-tries: 6\n');
    const proxy = await startProxy(env.hub.url, ['--config', config]);
    try {
      const keyscan = async () =>
        (await run('ssh-keyscan', ['-p', String(proxy.port), '-t', 'ed25519', '127.0.0.1'])).stdout.toString().trim().split(' ')[2];
      const oldKey = await keyscan();
      const session = ssh(proxy.port, env.user.name, env.token, ['echo started; sleep 4; echo survived'], QUIET);
      await waitFor(() => proxy.logs().includes('session started'), { timeoutMs: 20_000, what: 'the session' });

      // A new host key and a stricter config.
      const keyFile = path.join(proxy.keyDir, 'ssh_host_ed25519_key');
      fs.rmSync(keyFile);
      fs.rmSync(`${keyFile}.pub`);
      const gen = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
      expect(gen.code).to.equal(0);
      fs.writeFileSync(config, 'max-auth-tries: 1\n');
      proxy.child.kill('SIGHUP');
      await waitFor(() => proxy.logs().includes('configuration and host keys reloaded'), { timeoutMs: 10_000, what: 'the reload' });

      const newKey = await keyscan();
      expect(newKey).to.not.equal(oldKey);
      expect(newKey).to.equal(fs.readFileSync(`${keyFile}.pub`, 'utf8').split(' ')[1]);
      const strict = await ssh(proxy.port, env.user.name, 'wrong', ['true'], ['-o', 'NumberOfPasswordPrompts=5']);
      expect(strict.stderr).to.contain('Too many authentication failures');
      expect(strict.stderr.match(/JupyterHub did not accept that token/g)).to.have.length(1);

      // An invalid config is refused and the daemon goes on with the last good one.
      fs.writeFileSync(config, 'max-auth-tries: 0\n');
      proxy.child.kill('SIGHUP');
      await waitFor(() => proxy.logs().includes('SIGHUP: configuration not reloaded: --max-auth-tries must be a positive integer'), {
        timeoutMs: 10_000,
        what: 'the refusal',
      });
      const r = await session;
      expect(r.code).to.equal(0);
      expect(r.stdout.toString()).to.equal('started\nsurvived\n');
      expect(proxy.child.exitCode).to.equal(null);
      const after = await ssh(proxy.port, env.user.name, env.token, ['echo ok'], QUIET);
      expect(after.code, after.stderr).to.equal(0);
    } finally {
      await proxy.stop();
    }
  });

  it('SIGHUP: new connections get the reloaded algorithm lists, a session open before keeps its cipher', async function () {
    const config = path.join(dir, 'proxy.yaml');
    fs.writeFileSync(config, 'ciphers: chacha20-poly1305@openssh.com\n');
    const proxy = await startProxy(env.hub.url, ['--config', config]);
    const chacha = ['-c', 'chacha20-poly1305@openssh.com'];
    try {
      const session = ssh(proxy.port, env.user.name, env.token, ['echo started; sleep 3; echo survived'], [...QUIET, ...chacha]);
      await waitFor(() => proxy.logs().includes('session started'), { timeoutMs: 20_000, what: 'the session' });
      fs.writeFileSync(config, 'ciphers: aes256-gcm@openssh.com\nhost-key-algorithms: ssh-ed25519\n');
      proxy.child.kill('SIGHUP');
      await waitFor(() => proxy.logs().includes('configuration and host keys reloaded'), { timeoutMs: 10_000, what: 'the reload' });
      expect(proxy.logs()).to.contain('--ciphers: offering clients aes256-gcm@openssh.com\n');

      const refused = await ssh(proxy.port, env.user.name, env.token, ['true'], chacha);
      expect(refused.code).to.equal(255);
      expect(refused.stderr).to.contain('no matching cipher found. Their offer: aes256-gcm@openssh.com');
      const rsa = await ssh(proxy.port, env.user.name, env.token, ['true'], ['-o', 'HostKeyAlgorithms=rsa-sha2-512']);
      expect(rsa.stderr).to.contain('no matching host key type found. Their offer: ssh-ed25519');
      const aes = await ssh(proxy.port, env.user.name, env.token, ['echo ok'], ['-v']);
      expect(aes.code, aes.stderr).to.equal(0);
      expect(aes.stderr).to.contain('kex: server->client cipher: aes256-gcm@openssh.com');
      const r = await session;
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.toString()).to.equal('started\nsurvived\n');
    } finally {
      await proxy.stop();
    }
  });

  it('SIGHUP with an unreadable host key keeps the old keys', async function () {
    const proxy = await startProxy(env.hub.url);
    try {
      fs.chmodSync(path.join(proxy.keyDir, 'ssh_host_rsa_key'), 0o644);
      proxy.child.kill('SIGHUP');
      await waitFor(() => /SIGHUP: configuration not reloaded: host key .*ssh_host_rsa_key has permissions 0644/.test(proxy.logs()), {
        timeoutMs: 10_000,
        what: 'the refusal',
      });
      const r = await ssh(proxy.port, env.user.name, env.token, ['echo still'], QUIET);
      expect(r.stdout.toString()).to.equal('still\n');
    } finally {
      await proxy.stop();
    }
  });
});

