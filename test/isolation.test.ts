// An exception while handling one connection must end that connection only:
// never the process, never another user's session. A real Hub, sshd or client
// cannot throw inside the daemon on demand, so this test runs the daemon's
// real Connection class in this process, with the real OpenSSH client and a
// real sshd (LocalSshdUpstream) for a real unix user, and injects faults
// through thin wrappers around the parts a connection calls out to. Each
// faulty login runs while a healthy session of the same daemon is open; the
// healthy one must finish normally, the faulty one must get a one-line
// message, the log must have the stack, and no exception or rejection may
// reach the process.
import { expect } from 'chai';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import winston from 'winston';
import { clientOffer, hostKeyAlgorithms, serverOffer } from '../lib/algorithms.js';
import type { Authorizer, LoginTarget } from '../lib/authorizer.js';
import { IDENT } from '../lib/config.js';
import { Connection, type ConnectionSettings } from '../lib/connection.js';
import type { HubClient } from '../lib/hub.js';
import { LocalSshdUpstream } from '../lib/localsshd.js';
import { Metrics } from '../lib/metrics.js';
import type { ServerStarter } from '../lib/servers.js';
import { ServerWatches } from '../lib/serverwatch.js';
import { generateKeyPair, parseKey, type ParsedKey } from '../lib/ssh2internals.js';
import type { Upstream } from '../lib/upstream.js';
import { childrenNamed } from './helpers/procs.js';
import { ssh, type RunResult } from './helpers/ssh.js';
import { createUnixUser, type UnixUser } from './helpers/unixuser.js';
import { waitFor } from './helpers/wait.js';

const TOKEN = 'isolation-test-token';
const QUIET = ['-o', 'LogLevel=ERROR'];
const INTERNAL_ERROR = 'Internal error in jupyter-ssh-proxy; try again later';

/** The faults, chosen by the login name `USER+FAULT` (the fault is the target's server name). */
type Fault =
  | 'none'
  | 'authorize-throws'
  | 'spawn-throws'
  | 'explain-rejects'
  | 'close-throws'
  | 'channel-hook-throws';

class Thrown extends Error {
  constructor(where: string) {
    super(`injected fault in ${where}`);
  }
}

describe('an exception in one connection ends that connection only', function () {
  let user: UnixUser;
  let runtimeDir: string;
  let sshd: LocalSshdUpstream;
  let server: net.Server;
  let port: number;
  const logLines: string[] = [];
  /** What reached the process: must stay empty. */
  const escaped: string[] = [];
  const onUncaught = (err: Error) => escaped.push(`uncaughtException: ${err.stack}`);
  const onUnhandled = (reason: unknown) => escaped.push(`unhandledRejection: ${String((reason as Error)?.stack ?? reason)}`);
  /** Connections open, by the daemon's own accounting (ConnectionHooks.closed). */
  let open = 0;
  let closedTwice = 0;

  before(async function () {
    this.timeout(60_000);
    user = await createUnixUser('isolate');
    // Under /run, not /tmp: sshd's StrictModes refuses authorized_keys below a world-writable folder.
    runtimeDir = fs.mkdtempSync('/run/jsp-isolation-');
    fs.chmodSync(runtimeDir, 0o755);
    sshd = new LocalSshdUpstream({ sshdPath: '/usr/sbin/sshd', unixUserTemplate: '{username}', runtimeDir, sshdOptions: [] });
    expect(await sshd.check()).to.equal(undefined);

    const stream = new PassThrough();
    stream.setEncoding('utf8');
    stream.on('data', (line: string) => logLines.push(line));
    const logger = winston.createLogger({
      level: 'debug',
      format: winston.format.printf((info) => `${info.level}: [${String(info.conn)}] ${String(info.message)}`),
      transports: [new winston.transports.Stream({ stream })],
    });

    const settings = buildSettings(user.name, sshd);
    server = net.createServer((socket) => {
      const connection = new Connection(socket, settings, logger);
      open++;
      let closed = false;
      connection.start({
        authenticated: () => {},
        closed: () => {
          if (closed) closedTwice++;
          closed = true;
          open--;
        },
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUnhandled);
  });

  after(async function () {
    this.timeout(30_000);
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUnhandled);
    server?.close();
    sshd?.dispose();
    if (runtimeDir) fs.rmSync(runtimeDir, { recursive: true, force: true });
    await user?.remove();
  });

  /** A healthy session that is busy while `during` runs, and must end normally afterwards. */
  async function besideHealthySession(during: () => Promise<void>): Promise<void> {
    let child: ChildProcess | undefined;
    let output = '';
    const healthy = ssh(port, user.name, TOKEN, ['echo started; read line; echo "got $line"'], QUIET, {
      timeoutMs: 60_000,
      onSpawn: (c) => {
        child = c;
        c.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      },
    });
    await waitFor(() => output.includes('started') || child?.exitCode != null, { timeoutMs: 30_000, what: 'the healthy session to start' });
    try {
      expect(output, 'the healthy session started').to.contain('started');
      await during();
    } finally {
      child!.stdin!.end('still here\n');
    }
    const r: RunResult = await healthy;
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.equal('started\ngot still here\n');
  }

  async function faultyLogin(fault: Fault, extra: string[] = [], command = ['echo reached']): Promise<RunResult> {
    return ssh(port, `${user.name}+${fault}`, TOKEN, command, [...QUIET, ...extra], { timeoutMs: 60_000 });
  }

  function logFor(where: string): string[] {
    return logLines.filter((l) => l.includes(`internal error in ${where}`));
  }

  afterEach(async function () {
    // The daemon's accounting is back at zero: every connection told it, once, that it closed.
    await waitFor(() => open === 0, { timeoutMs: 10_000, what: `open connections to drop to 0 (now ${open})` });
    // Every sshd this process started has exited (closing stdin ends it; signals follow at 3 and 6 s).
    await waitFor(() => childrenNamed(process.pid, 'sshd').length === 0, { timeoutMs: 15_000, what: 'the sshd children to exit' });
    expect(closedTwice, 'connections reported closed twice').to.equal(0);
    expect(escaped, 'exceptions that reached the process').to.deep.equal([]);
  });

  it('logs in normally when nothing is wrong (the harness itself works)', async function () {
    this.timeout(60_000);
    const r = await faultyLogin('none');
    expect(r.code, `${r.stderr}\n${logLines.join('')}`).to.equal(0);
    expect(r.stdout.toString()).to.equal('reached\n');
  });

  it('an authorizer that throws synchronously: "Internal error" to that client', async function () {
    this.timeout(60_000);
    await besideHealthySession(async () => {
      const r = await faultyLogin('authorize-throws');
      expect(r.code).to.equal(255);
      expect(r.stderr).to.contain(INTERNAL_ERROR);
      expect(r.stdout.toString()).to.equal('');
    });
    expect(logFor('authentication').join('\n')).to.match(/injected fault in authorize\n\s+at /);
  });

  it('a server start that fails with an unexpected error', async function () {
    this.timeout(60_000);
    await besideHealthySession(async () => {
      const r = await faultyLogin('spawn-throws');
      expect(r.code).to.equal(255);
      expect(r.stderr).to.contain(INTERNAL_ERROR);
    });
    expect(logFor('authentication')).to.not.deep.equal([]);
  });

  it('an upstream failure whose explanation itself fails (a rejected promise nobody awaited)', async function () {
    this.timeout(60_000);
    await besideHealthySession(async () => {
      const r = await faultyLogin('explain-rejects');
      expect(r.code).to.equal(255);
      expect(r.stderr).to.contain(INTERNAL_ERROR);
    });
    expect(logFor('explaining an upstream failure')).to.not.deep.equal([]);
  });

  it('closing the upstream throws at the end of a session: the session still ends, sshd is still reaped', async function () {
    this.timeout(60_000);
    await besideHealthySession(async () => {
      const r = await faultyLogin('close-throws');
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.toString()).to.equal('reached\n');
    });
    expect(logLines.join('\n')).to.match(/internal error closing the upstream: Error: injected fault in close/);
  });

  it('a relay hook that throws in the middle of a session (channel open)', async function () {
    this.timeout(60_000);
    await besideHealthySession(async () => {
      // `ssh -W` opens a direct-tcpip channel: the hook that counts channels throws.
      const r = await faultyLogin('channel-hook-throws', ['-W', `127.0.0.1:${port}`], []);
      expect(r.code).to.equal(255);
      expect(r.stderr).to.contain(INTERNAL_ERROR);
    });
    expect(logFor('channel count').join('\n')).to.match(/injected fault in the channel count\n\s+at /);
  });
});

/**
 * Connection settings around the real sshd upstream, with a fault injected
 * where the login's fault name says. Everything the Hub would do is a stub
 * that accepts TOKEN for `unixUser` and says the server runs.
 */
function buildSettings(unixUser: string, sshd: LocalSshdUpstream): ConnectionSettings {
  const pair = generateKeyPair('ed25519');
  const hostKey = parseKey(pair.private) as ParsedKey;
  const hostKeys: Record<string, ParsedKey> = {};
  for (const algo of hostKeyAlgorithms(hostKey.type)) hostKeys[algo] = hostKey;
  const faultOf = (target: LoginTarget) => target.server as Fault;

  const authorizer: Authorizer = {
    authorize(login: string, token: string) {
      const [name, fault = 'none'] = login.split('+');
      // Synchronously, not as a rejected promise: the harder case.
      if (fault === 'authorize-throws') throw new Thrown('authorize');
      if (name !== unixUser || token !== TOKEN) {
        return Promise.resolve({ ok: false, message: 'bad token', detail: 'bad token', final: false });
      }
      return Promise.resolve({ ok: true, owner: name, target: { hubUser: name, server: fault } });
    },
  } as Authorizer;

  const servers = {
    async ensureRunning(target: LoginTarget) {
      if (faultOf(target) === 'spawn-throws') throw new TypeError('injected fault in ensureRunning');
    },
  } as unknown as ServerStarter;

  const upstream: Upstream = {
    precheck: (target) => sshd.precheck({ ...target, server: '' }),
    async connect(target, log) {
      const fault = faultOf(target);
      const conn = await sshd.connect({ ...target, server: '' }, log);
      if (fault === 'explain-rejects') {
        // Log in as someone the internal sshd does not know: it refuses, and
        // the explanation of the refusal fails.
        return {
          ...conn,
          username: 'root-but-not-allowed',
          explainFailure: () => Promise.reject(new Thrown('explainFailure')),
        };
      }
      if (fault === 'close-throws') {
        return {
          ...conn,
          close: () => {
            conn.close();
            throw new Thrown('close');
          },
        };
      }
      return conn;
    },
  };

  const metrics = new Metrics();
  // The hook runs inside the relay, in the middle of parsing the client's packets.
  const faultyMetrics = Object.create(metrics) as Metrics;
  Object.defineProperty(faultyMetrics, 'channels', {
    value: {
      inc: (labels: { type: string }) => {
        if (labels.type === 'direct-tcpip') throw new Thrown('the channel count');
        metrics.channels.inc(labels);
      },
    },
  });

  return {
    ident: IDENT,
    hostKeys,
    serverOffer: serverOffer(Object.keys(hostKeys)),
    clientOffer: clientOffer(),
    authorizer,
    servers,
    watches: new ServerWatches({} as HubClient, { activityIntervalMs: 3_600_000, pollIntervalMs: 3_600_000 }, () => undefined),
    upstream,
    tokenPage: 'http://hub.invalid/hub/token',
    maxAuthTries: 6,
    loginGraceTimeMs: 60_000,
    upstreamLoginTimeoutMs: 30_000,
    maxQueuedBytes: 64 * 1024 * 1024,
    metrics: faultyMetrics,
  };
}
