// Forwarding through the proxy: local (-L), remote (-R), dynamic (-D), agent
// (-A), X11 (-X) and connection sharing (ControlMaster). Every test drives the
// real OpenSSH client through the real daemon into the real sshd and checks
// that real data went through. Client side and remote side are this host.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { useEnv, type EnvOptions } from './helpers/fixture.js';
import { CLASSIC_NOTEBOOK_SERVER, JUPYTER_SERVER_2, useServerExtension } from './helpers/serverextension.js';
import { askpassEnv, run, sshOptions, type RunResult } from './helpers/ssh.js';
import { freePort, waitFor } from './helpers/wait.js';

/** How long a forward, agent or X server may take to become usable. */
const READY_TIMEOUT_MS = 30_000;
/** Size of the blob each HTTP test server serves: many channel packets and window adjustments. */
const BLOB_BYTES = 2 * 1024 * 1024;
/** The screen Xvfb is given, checked in xdpyinfo's output. */
const X_WIDTH = 1152;
const X_HEIGHT = 864;

// ---------------------------------------------------------------------------
// Per-test cleanup: everything a test starts registers its own undo here, and
// afterEach runs them in reverse order whether the test passed or not.

let cleanups: { what: string; fn: () => unknown }[] = [];

function defer(what: string, fn: () => unknown): void {
  cleanups.push({ what, fn });
}

async function runCleanups(): Promise<void> {
  const todo = cleanups.reverse();
  cleanups = [];
  const errors: Error[] = [];
  for (const { what, fn } of todo) {
    try {
      await fn();
    } catch (err) {
      errors.push(new Error(`cleanup of ${what} failed: ${(err as Error).message}`, { cause: err }));
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, errors.map((e) => e.message).join('; '));
}

/** A private temp dir, removed after the test. */
function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  defer(`temp dir ${dir}`, () => fsp.rm(dir, { recursive: true, force: true, maxRetries: 3 }));
  return dir;
}

// ---------------------------------------------------------------------------
// Long-running processes (background ssh, ssh-agent, Xvfb) the test owns.

interface Background {
  name: string;
  child: ChildProcess;
  /** stdout and stderr so far, interleaved. */
  output(): string;
  exited(): boolean;
  exitStatus(): string | undefined;
  /** Resolves true once the process has exited, false after `ms`. */
  waitExit(ms: number): Promise<boolean>;
  /** SIGTERM, SIGKILL after 5 s, wait for exit. Idempotent. */
  stop(): Promise<void>;
}

/** Background processes of the current test, for failure reports. */
let backgrounds: Background[] = [];

/** `stdin: 'pipe'` keeps the process's stdin open for the test to write to (`child.stdin`). */
async function startBackground(
  name: string,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  { stdin = 'ignore' }: { stdin?: 'ignore' | 'pipe' } = {},
): Promise<Background> {
  const child = spawn(cmd, args, { env, stdio: [stdin, 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  let status: string | undefined;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      status = signal ? `killed by ${signal}` : `exit status ${code}`;
      resolve();
    });
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const waitExit = (ms: number): Promise<boolean> =>
    new Promise((resolve) => {
      if (status !== undefined) return resolve(true);
      const timer = setTimeout(() => resolve(false), ms);
      void exit.then(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  let stopping: Promise<void> | undefined;
  const bg: Background = {
    name,
    child,
    output: () => output,
    exited: () => status !== undefined,
    exitStatus: () => status,
    waitExit,
    stop: () =>
      (stopping ??= (async () => {
        if (status !== undefined) return;
        child.kill('SIGTERM');
        if (await waitExit(5_000)) return;
        child.kill('SIGKILL');
        if (!(await waitExit(5_000))) throw new Error(`${name} (pid ${child.pid}) survived SIGKILL`);
      })()),
  };
  backgrounds.push(bg);
  defer(name, () => bg.stop());
  return bg;
}

/**
 * Polls `attempt` until it returns a value, failing at once (with the process's
 * output) if `bg` exits meanwhile.
 */
async function untilReady<T>(
  bg: Background,
  what: string,
  attempt: () => Promise<T | undefined | false>,
): Promise<T> {
  const result = await waitFor<{ value: T } | { dead: true }>(
    async () => {
      if (bg.exited()) return { dead: true };
      // Like waitFor: undefined, false or an exception mean "not yet".
      const value = await attempt();
      return value === undefined || value === false ? undefined : { value };
    },
    { timeoutMs: READY_TIMEOUT_MS, intervalMs: 100, what },
  );
  if ('dead' in result) {
    throw new Error(`${bg.name} exited (${bg.exitStatus()}) before ${what}:\n${bg.output()}`);
  }
  return result.value;
}

// ---------------------------------------------------------------------------
// The data the forwards carry: a small HTTP server with a unique greeting and
// a large random blob.

interface TestServer {
  /** Its TCP port on 127.0.0.1; 0 when it listens on a unix socket. */
  port: number;
  greeting: string;
  blobSha256: string;
  /** Request paths seen, in order. */
  requests: string[];
}

/** On 127.0.0.1, or on the unix socket `socketPath` (mode 0666, so that sshd running as the test user may connect). */
async function startHttpServer(socketPath?: string): Promise<TestServer> {
  const greeting = `hello from ${crypto.randomBytes(8).toString('hex')}\n`;
  const blob = crypto.randomBytes(BLOB_BYTES);
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    res.setHeader('Connection', 'close');
    if (req.url?.startsWith('/blob')) {
      res.setHeader('Content-Type', 'application/octet-stream');
      res.end(blob);
    } else {
      res.setHeader('Content-Type', 'text/plain');
      res.end(greeting);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (socketPath) server.listen(socketPath, () => resolve());
    else server.listen(0, '127.0.0.1', () => resolve());
  });
  if (socketPath) fs.chmodSync(socketPath, 0o666);
  defer('HTTP test server', async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port: socketPath ? 0 : (server.address() as net.AddressInfo).port,
    greeting,
    blobSha256: sha256(blob),
    requests,
  };
}

function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Where an HTTP request goes: a TCP address, or a unix socket. */
type HttpTarget = { host: string; port: number } | { socketPath: string };

function describeTarget(target: HttpTarget): string {
  return 'socketPath' in target ? `socket ${target.socketPath}` : `${target.host} port ${target.port}`;
}

/** GET urlPath from `target` without connection reuse; rejects on any error. */
function httpGet(target: HttpTarget, urlPath: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ ...target, path: urlPath, agent: false, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} on ${describeTarget(target)} timed out`)));
    req.on('error', reject);
  });
}

/** Resolves true if something accepts connections on 127.0.0.1:port, or on the unix socket at that path. */
function accepts(where: number | string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = typeof where === 'number' ? net.connect({ host: '127.0.0.1', port: where }) : net.connect(where);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/** Waits until nothing accepts on `where` (as for accepts()) any more: `what` is the event the wait is for. */
async function untilRefused(where: number | string, what: string): Promise<void> {
  await waitFor(async () => !(await accepts(where)), { timeoutMs: 15_000, what });
}

/** `curl` GET of `url` through the SOCKS port `socksPort`, the host name resolved at the far end (--socks5-hostname). */
function curlViaSocks(socksPort: number, url: string): Promise<RunResult> {
  return run('curl', ['-sS', '--fail', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${socksPort}`, url], { timeoutMs: 30_000 });
}

/** The body of `url` through `socksPort` once the forward is up (polls while `bg` runs). */
function untilServedViaSocks(bg: Background, socksPort: number, url: string): Promise<string> {
  return untilReady(bg, `curl of ${url} through SOCKS port ${socksPort}`, async () => {
    const r = await curlViaSocks(socksPort, url);
    if (r.code !== 0) throw new Error(`curl exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout.toString();
  });
}

/**
 * Makes sure something listens on host:port for the rest of the test: a
 * listener of ours, or whoever already holds it. Resolves false where the
 * address does not exist (a host without IPv6).
 */
function holdPort(host: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((sock) => sock.destroy());
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(true);
      else if (err.code === 'EADDRNOTAVAIL' || err.code === 'EAFNOSUPPORT') resolve(false);
      else reject(err);
    });
    server.listen({ host, port }, () => {
      defer(`listener on ${host} port ${port}`, () => new Promise((done) => server.close(done)));
      resolve(true);
    });
  });
}

/**
 * The addresses a remote forward listens on. Without GatewayPorts sshd binds
 * "localhost", ::1 and 127.0.0.1. For -R 0 the kernel picks the port on the
 * first of them, and sshd takes the same port on the other only where it is
 * free: if a hub or notebook server of another test holds it on 127.0.0.1,
 * that address leads there (CI once got Jupyter's 302 from it). Such a
 * forward works if one of them serves the test server.
 */
const REMOTE_FORWARD_HOSTS = ['::1', '127.0.0.1'];

/**
 * Checks greeting and blob of `server` through `where`: a port on one of
 * `hosts`, or a unix socket's path. Polls until one of them serves the
 * greeting (a forward not up yet refuses); what each last answered is in
 * the timeout message.
 */
async function expectServedThrough(
  bg: Background,
  where: number | string,
  server: TestServer,
  tag: string,
  hosts: string[] = ['127.0.0.1'],
): Promise<void> {
  const targets: HttpTarget[] = typeof where === 'string' ? [{ socketPath: where }] : hosts.map((host) => ({ host, port: where }));
  const what = typeof where === 'string' ? `socket ${where}` : `port ${where}`;
  const target = await untilReady(bg, `${server.greeting.trim()} through ${what}`, async () => {
    const answers: string[] = [];
    for (const t of targets) {
      try {
        const r = await httpGet(t, `/${tag}`);
        if (r.status === 200 && r.body.toString() === server.greeting) return t;
        answers.push(`${describeTarget(t)} answered ${r.status} ${JSON.stringify(r.body.toString().slice(0, 80))}`);
      } catch (err) {
        answers.push(`${describeTarget(t)}: ${(err as Error).message}`);
      }
    }
    throw new Error(answers.join('; '));
  });
  const blob = await httpGet(target, `/blob-${tag}`);
  expect(blob.status).to.equal(200);
  expect(blob.body.length).to.equal(BLOB_BYTES);
  expect(sha256(blob.body)).to.equal(server.blobSha256);
  expect(server.requests).to.include.members([`/${tag}`, `/blob-${tag}`]);
}

// ---------------------------------------------------------------------------

/**
 * Where sessions run, each tested alike: the daemon's own `sshd -i`, and the
 * user's server through the server extension (`--upstream websocket`), whose
 * sshd runs as the user with the extension's settings.
 */
const UPSTREAMS: { name: string; env: () => EnvOptions }[] = [
  { name: 'the local sshd', env: () => ({}) },
  {
    name: "the user's server (--upstream websocket)",
    env: () => ({ hub: { extraConfig: useServerExtension(CLASSIC_NOTEBOOK_SERVER) }, proxyArgs: ['--upstream', 'websocket'], serviceToken: true }),
  },
  {
    name: `the user's server in ${JUPYTER_SERVER_2.name} (--upstream websocket)`,
    env: () => ({
      hub: { extraConfig: useServerExtension(JUPYTER_SERVER_2), distribution: JUPYTER_SERVER_2.distribution },
      proxyArgs: ['--upstream', 'websocket'],
      serviceToken: true,
    }),
  },
];

for (const upstream of UPSTREAMS) describe(`forwarding through the proxy into ${upstream.name} (real OpenSSH client and sshd)`, function () {
  this.timeout(90_000);
  this.slow(10_000);
  const env = useEnv(upstream.env());
  let logStart = 0;

  /** `ssh -N [args] user@127.0.0.1` in the background, token via askpass. */
  function startSshN(name: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Background> {
    return startBackground(
      name,
      'ssh',
      [...sshOptions(env.proxy.port), '-N', '-o', 'ExitOnForwardFailure=yes', ...args, `${env.user.name}@127.0.0.1`],
      askpassEnv(env.token, extraEnv),
    );
  }

  /** Proxy log lines written since this test began. */
  function testLogs(): string {
    return env.proxy.logs().slice(logStart);
  }

  beforeEach(function () {
    logStart = env.proxy.logs().length;
    backgrounds = [];
    cleanups = [];
  });

  afterEach(async function () {
    this.timeout(60_000);
    if (this.currentTest?.state === 'failed') {
      const report = [`--- proxy log during "${this.currentTest.title}" ---`, testLogs()];
      for (const bg of backgrounds) report.push(`--- output of ${bg.name} (${bg.exitStatus() ?? 'running'}) ---`, bg.output());
      console.error(report.join('\n'));
    }
    await runCleanups();
  });

  it('-L: a local forward reaches a server on the remote side', async function () {
    const server = await startHttpServer();
    const localPort = await freePort();
    const ssh = await startSshN('ssh -L', ['-L', `127.0.0.1:${localPort}:127.0.0.1:${server.port}`]);
    await expectServedThrough(ssh, localPort, server, 'via-L');
  });

  it('-W (what ProxyJump runs): stdin and stdout lead to a server on the remote side', async function () {
    const server = await startHttpServer();
    const r = await env.ssh([], ['-o', 'LogLevel=ERROR', '-W', `127.0.0.1:${server.port}`], {
      input: 'GET /via-W HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n',
    });
    expect(r.code, r.stderr).to.equal(0);
    const response = r.stdout.toString();
    expect(response).to.match(/^HTTP\/1\.1 200 /);
    expect(response.endsWith(`\r\n\r\n${server.greeting}`), response).to.equal(true);
    expect(server.requests).to.deep.equal(['/via-W']);
  });

  it('-R with an explicit port: the remote port leads to the client side', async function () {
    const server = await startHttpServer();
    const remotePort = await freePort();
    // -v: ssh logs the reply to its tcpip-forward request.
    const ssh = await startSshN('ssh -R', ['-v', '-R', `${remotePort}:127.0.0.1:${server.port}`]);
    await expectServedThrough(ssh, remotePort, server, 'via-R');
    // sshd's REQUEST_SUCCESS made it back to the client.
    const success = new RegExp(`remote forward success for: listen (\\S+:)?${remotePort}, connect 127\\.0\\.0\\.1:${server.port}\\b`);
    await untilReady(ssh, 'ssh to log the reply to tcpip-forward', async () => success.test(ssh.output()));
    // The port belonged to the forward: it closes with the connection.
    await ssh.stop();
    await untilRefused(remotePort, `remote port ${remotePort} to close after ssh exited`);
  });

  it('-R 0: the port sshd allocates is reported to the client and works', async function () {
    const server = await startHttpServer();
    const ssh = await startSshN('ssh -R 0', ['-R', `0:127.0.0.1:${server.port}`]);
    const allocated = await untilReady(ssh, 'the "Allocated port" message', async () => {
      const m = new RegExp(`Allocated port (\\d+) for remote forward to 127\\.0\\.0\\.1:${server.port}\\b`).exec(ssh.output());
      return m ? Number(m[1]) : undefined;
    });
    expect(allocated).to.be.within(1, 65535);
    expect(allocated).to.not.equal(server.port);
    await expectServedThrough(ssh, allocated, server, 'via-R0', REMOTE_FORWARD_HOSTS);
  });

  it('-R several at once: each global request reply reaches the right forward', async function () {
    // Replies to global requests carry no id; ssh pairs them with its requests
    // by order. Three forwards, two of them port 0, on one connection.
    const [a, b, c] = [await startHttpServer(), await startHttpServer(), await startHttpServer()];
    const fixedPort = await freePort();
    const ssh = await startSshN('ssh -R x3', [
      '-R', `${fixedPort}:127.0.0.1:${a.port}`,
      '-R', `0:127.0.0.1:${b.port}`,
      '-R', `0:127.0.0.1:${c.port}`,
    ]);
    const allocated = await untilReady(ssh, 'two "Allocated port" messages', async () => {
      const found = new Map<number, number>();
      for (const m of ssh.output().matchAll(/Allocated port (\d+) for remote forward to 127\.0\.0\.1:(\d+)/g)) {
        found.set(Number(m[2]), Number(m[1]));
      }
      return found.size === 2 ? found : undefined;
    });
    expect([...allocated.keys()].sort()).to.deep.equal([b.port, c.port].sort());
    await expectServedThrough(ssh, fixedPort, a, 'via-R-fixed');
    await expectServedThrough(ssh, allocated.get(b.port)!, b, 'via-R0-b', REMOTE_FORWARD_HOSTS);
    await expectServedThrough(ssh, allocated.get(c.port)!, c, 'via-R0-c', REMOTE_FORWARD_HOSTS);
  });

  it('-D: a SOCKS forward carries curl --socks5-hostname to the server', async function () {
    const server = await startHttpServer();
    const socksPort = await freePort();
    const ssh = await startSshN('ssh -D', ['-D', `127.0.0.1:${socksPort}`]);
    const greeting = await untilServedViaSocks(ssh, socksPort, `http://127.0.0.1:${server.port}/via-D`);
    expect(greeting).to.equal(server.greeting);
    const blob = await curlViaSocks(socksPort, `http://127.0.0.1:${server.port}/blob-via-D`);
    expect(blob.code, blob.stderr).to.equal(0);
    expect(blob.stdout.length).to.equal(BLOB_BYTES);
    expect(sha256(blob.stdout)).to.equal(server.blobSha256);
    expect(server.requests).to.include.members(['/via-D', '/blob-via-D']);
  });

  it('-L to a unix socket (direct-streamlocal, as VS Code with remoteServerListenOnSocket): a local port leads to a server on a remote socket', async function () {
    const dir = tempDir('jsp-streamlocal-');
    // sshd connects to the socket as the test user.
    fs.chmodSync(dir, 0o755);
    const socketPath = path.join(dir, 'server.sock');
    const server = await startHttpServer(socketPath);
    const localPort = await freePort();
    const ssh = await startSshN('ssh -L to a socket', ['-L', `127.0.0.1:${localPort}:${socketPath}`]);
    await expectServedThrough(ssh, localPort, server, 'via-L-socket');
  });

  it('-R from a unix socket (streamlocal-forward): a socket sshd makes on the remote side leads to the client side', async function () {
    const server = await startHttpServer();
    // In the user's home: sshd makes the socket as the test user.
    const remoteSocket = path.join(env.user.home, `jsp-R-${crypto.randomBytes(4).toString('hex')}.sock`);
    defer(`remote socket ${remoteSocket}`, () => fsp.rm(remoteSocket, { force: true }));
    // -v: ssh logs the reply to its streamlocal-forward request.
    const ssh = await startSshN('ssh -R from a socket', ['-v', '-R', `${remoteSocket}:127.0.0.1:${server.port}`]);
    await expectServedThrough(ssh, remoteSocket, server, 'via-R-socket');
    // -2: OpenSSH's port number for a socket (PORT_STREAMLOCAL).
    const success = `remote forward success for: listen ${remoteSocket}:-2, connect 127.0.0.1:${server.port}`;
    await untilReady(ssh, 'ssh to log the reply to streamlocal-forward', async () => ssh.output().includes(success));
    // The socket belonged to the forward: it stops accepting with the connection.
    await ssh.stop();
    await untilRefused(remoteSocket, `remote socket ${remoteSocket} to stop accepting after ssh exited`);
  });

  it("VS Code Remote-SSH's way: `ssh -T -D PORT host bash`, a script on stdin, its server reached through the SOCKS port", async function () {
    // VS Code keeps one such connection open: it sends a script that installs
    // and starts its server on stdin, reads the server's port from stdout, and
    // connects to it through the connection's own -D port. Here the server is
    // Python's http.server, serving a marker and a random blob.
    const marker = `marker-${crypto.randomBytes(8).toString('hex')}`;
    const socksPort = await freePort();
    const ssh = await startBackground(
      'ssh -T -D bash',
      'ssh',
      [...sshOptions(env.proxy.port), '-T', '-D', `127.0.0.1:${socksPort}`, `${env.user.name}@127.0.0.1`, 'bash'],
      askpassEnv(env.token),
      { stdin: 'pipe' },
    );
    // In braces, so that bash has read the whole script before `cat` reads the rest of stdin.
    ssh.child.stdin!.write([
      '{',
      'set -e',
      'dir=$(mktemp -d)',
      'cd "$dir"',
      `printf %s ${marker} > marker`,
      `head -c ${BLOB_BYTES} /dev/urandom > blob`,
      'echo "blob==$(sha256sum blob | cut -d " " -f 1)=="',
      'python3 -u -m http.server --bind 127.0.0.1 0 &',
      'server=$!',
      // As VS Code's script: the server lives as long as the connection's stdin.
      'cat > /dev/null',
      'kill "$server"',
      'cd / && rm -rf "$dir"',
      '}',
      '',
    ].join('\n'));
    const reported = await untilReady(ssh, 'the script to report its server', async () => {
      const out = ssh.output();
      const port = /Serving HTTP on 127\.0\.0\.1 port (\d+)/.exec(out)?.[1];
      const blobSha256 = /blob==([0-9a-f]{64})==/.exec(out)?.[1];
      return port && blobSha256 ? { port: Number(port), blobSha256 } : undefined;
    });
    const served = await untilServedViaSocks(ssh, socksPort, `http://127.0.0.1:${reported.port}/marker`);
    expect(served).to.equal(marker);
    const blob = await curlViaSocks(socksPort, `http://127.0.0.1:${reported.port}/blob`);
    expect(blob.code, blob.stderr).to.equal(0);
    expect(blob.stdout.length).to.equal(BLOB_BYTES);
    expect(sha256(blob.stdout)).to.equal(reported.blobSha256);
    // The connection's end reaches the script through the proxy: its stdin ends and it stops the server.
    await ssh.stop();
    await untilRefused(reported.port, `the remote server on port ${reported.port} to stop after ssh exited`);
  });

  it('-A: the remote side lists the key held by the local agent', async function () {
    const dir = tempDir('jsp-agent-');
    const sock = path.join(dir, 'agent.sock');
    const agentEnv = { ...process.env, SSH_AUTH_SOCK: sock };
    const agent = await startBackground('ssh-agent', 'ssh-agent', ['-D', '-a', sock], agentEnv);
    // `ssh-add -l` exits 1 for "no identities" once the agent answers, 2 while it cannot connect.
    await untilReady(agent, 'ssh-agent to answer', async () => (await run('ssh-add', ['-l'], { env: agentEnv })).code === 1);

    const keyFile = path.join(dir, 'id_ed25519');
    const comment = `jsp-agent-test-${crypto.randomBytes(4).toString('hex')}`;
    const keygen = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', keyFile]);
    expect(keygen.code, keygen.stderr).to.equal(0);
    const add = await run('ssh-add', [keyFile], { env: agentEnv });
    expect(add.code, add.stderr).to.equal(0);
    const fp = await run('ssh-keygen', ['-l', '-f', `${keyFile}.pub`]);
    const fingerprint = /SHA256:\S+/.exec(fp.stdout.toString())?.[0];
    expect(fingerprint, fp.stdout.toString()).to.be.a('string');

    const remote = 'echo "sock=$SSH_AUTH_SOCK"; ssh-add -l';
    const res = await env.ssh([remote], ['-A'], { env: { SSH_AUTH_SOCK: sock } });
    const out = res.stdout.toString();
    expect(res.code, `${out}\n${res.stderr}`).to.equal(0);
    expect(out).to.include(fingerprint!);
    expect(out).to.include(comment);
    // The remote socket is sshd's agent listener, not the local one.
    const remoteSock = /^sock=(.*)$/m.exec(out)?.[1];
    expect(remoteSock).to.be.a('string').and.not.equal('').and.not.equal(sock);

    // Control: without -A the remote side has no agent at all.
    const without = await env.ssh([remote], ['-a'], { env: { SSH_AUTH_SOCK: sock } });
    expect(without.stdout.toString()).to.not.include(fingerprint!);
    expect(without.code).to.not.equal(0);
  });

  it('-X: xdpyinfo on the remote side talks to the local Xvfb', async function () {
    const dir = tempDir('jsp-x11-');
    const xauthority = path.join(dir, 'Xauthority');
    const cookie = crypto.randomBytes(16).toString('hex');

    // A display number nobody uses; if another X server grabs it first, Xvfb
    // exits and the next number is tried.
    let display: number | undefined;
    const first = 100 + crypto.randomInt(800);
    for (let n = first; n < first + 20 && display === undefined; n++) {
      if (fs.existsSync(`/tmp/.X11-unix/X${n}`) || fs.existsSync(`/tmp/.X${n}-lock`)) continue;
      const xa = await run('xauth', ['-f', xauthority, 'add', `:${n}`, 'MIT-MAGIC-COOKIE-1', cookie]);
      expect(xa.code, xa.stderr).to.equal(0);
      const xvfb = await startBackground(`Xvfb :${n}`, 'Xvfb', [
        `:${n}`, '-screen', '0', `${X_WIDTH}x${X_HEIGHT}x24`, '-nolisten', 'tcp', '-auth', xauthority,
      ], process.env);
      const up = await waitFor(
        () => (xvfb.exited() ? 'exited' : fs.existsSync(`/tmp/.X11-unix/X${n}`) ? 'up' : undefined),
        { timeoutMs: READY_TIMEOUT_MS, what: `Xvfb :${n} to create its socket` },
      );
      if (up === 'up') display = n;
    }
    expect(display, 'no free X display found').to.be.a('number');
    const xEnv = { DISPLAY: `:${display}`, XAUTHORITY: xauthority };
    // The local side works before ssh is involved (cookie and server agree).
    const local = await run('xdpyinfo', [], { env: { ...process.env, ...xEnv } });
    expect(local.code, local.stderr).to.equal(0);

    // sshd (X11UseLocalhost, X11DisplayOffset 10) takes the first display
    // whose port it can bind on every loopback address. The suite's hubs and
    // notebook servers hold ports on 127.0.0.1 alone, and xdpyinfo would
    // reach one of them if sshd took a display bound on ::1 only. Taking
    // display 10 on 127.0.0.1 and 11 on ::1 shows that sshd skips both.
    const hasV6 = await holdPort('::1', 6011);
    expect(await holdPort('127.0.0.1', 6010)).to.equal(true);
    if (!hasV6) expect(await holdPort('127.0.0.1', 6011)).to.equal(true);

    const res = await env.ssh(['echo "display=$DISPLAY"; xdpyinfo'], ['-X'], { env: xEnv });
    const out = res.stdout.toString();
    expect(res.code, `${out}\n${res.stderr}`).to.equal(0);
    // sshd's X11 proxy display, e.g. localhost:12.0, not the local one.
    const remoteDisplay = /^display=localhost:(\d+)\.0$/m.exec(out);
    expect(remoteDisplay, out).to.not.equal(null);
    expect(Number(remoteDisplay![1])).to.be.at.least(12);
    expect(out).to.include('name of display:');
    expect(out).to.match(new RegExp(`dimensions:\\s+${X_WIDTH}x${X_HEIGHT} pixels`));
  });

  /**
   * A ControlMaster connection (`ssh -M -N`), once its control socket
   * answers, and `mux`, which runs `ssh [args] user@host [command]` over
   * it. Those clients get no token: one that did not use the shared
   * connection could not log in and would fail.
   */
  async function startControlMaster(): Promise<{ master: Background; mux(args: string[], command?: string[]): Promise<RunResult> }> {
    const sock = path.join(tempDir('jsp-mux-'), 'cm');
    const muxEnv: NodeJS.ProcessEnv = { ...process.env, SSH_ASKPASS_REQUIRE: 'never' };
    const muxOptions = [...sshOptions(env.proxy.port), '-o', 'BatchMode=yes', '-S', sock];
    const mux = (args: string[], command: string[] = []) => run('ssh', [...muxOptions, ...args, `${env.user.name}@127.0.0.1`, ...command], { env: muxEnv });
    const master = await startSshN('ssh -M', ['-M', '-S', sock, '-o', 'ControlPersist=no']);
    await untilReady(master, 'the control socket', async () => {
      const r = await mux(['-O', 'check']);
      if (r.code !== 0) throw new Error(`ssh -O check: ${r.stderr.trim()}`);
      return true;
    });
    return { master, mux };
  }

  it('ControlMaster: three concurrent sessions share one proxied connection', async function () {
    const countLogs = (re: RegExp) => (testLogs().match(re) ?? []).length;
    const { master, mux } = await startControlMaster();

    const markers = [0, 1, 2].map((i) => `session-${i}-${crypto.randomBytes(6).toString('hex')}`);
    const results = await Promise.all(markers.map((m) => mux(['-o', 'ControlMaster=no'], [`echo ${m}; echo "pid=$$"`])));
    results.forEach((r, i) => {
      const out = r.stdout.toString();
      expect(r.code, `session ${i}: ${out}\n${r.stderr}`).to.equal(0);
      expect(out).to.include(markers[i]!);
      for (const other of markers) if (other !== markers[i]) expect(out).to.not.include(other);
    });
    // Three separate remote shells.
    const pids = results.map((r) => /^pid=(\d+)$/m.exec(r.stdout.toString())?.[1]);
    expect(new Set(pids).size).to.equal(3);

    // Only the master reached the proxy: one TCP connection, one login.
    expect(countLogs(/connection from /g)).to.equal(1);
    expect(countLogs(/session started/g)).to.equal(1);

    const exit = await mux(['-O', 'exit']);
    expect(exit.code, exit.stderr).to.equal(0);
    expect(await master.waitExit(15_000), 'master still running after -O exit').to.equal(true);
    await waitFor(() => /session ended after/.test(testLogs()), {
      timeoutMs: 15_000,
      what: 'the proxy to log the end of the shared connection',
    });
  });

  it('ControlMaster: ssh -O forward adds a remote forward to the live connection, ssh -O cancel takes it away', async function () {
    const server = await startHttpServer();
    const remotePort = await freePort();
    const forward = ['-R', `${remotePort}:127.0.0.1:${server.port}`];
    const { master, mux } = await startControlMaster();

    const add = await mux(['-O', 'forward', ...forward]);
    expect(add.code, add.stderr).to.equal(0);
    await expectServedThrough(master, remotePort, server, 'via-O-forward');

    // cancel-tcpip-forward: a global request of its own, answered by sshd through the proxy.
    const cancel = await mux(['-O', 'cancel', ...forward]);
    expect(cancel.code, cancel.stderr).to.equal(0);
    await untilRefused(remotePort, `remote port ${remotePort} to close after ssh -O cancel`);
    // Only the forward went: the connection still serves sessions.
    const after = await mux(['-o', 'ControlMaster=no'], ['echo still-here']);
    expect(after.code, after.stderr).to.equal(0);
    expect(after.stdout.toString()).to.include('still-here');
    expect(master.exited(), 'the master exited').to.equal(false);
  });
});
