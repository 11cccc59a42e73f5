// Operating the daemon: JSON logs, Prometheus metrics, configuration sources.
import { expect } from 'chai';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from '../lib/cli.js';
import { useEnv } from './helpers/fixture.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { BIN, startProxy } from './helpers/proxy.js';
import { askpassEnv, run, sshOptions, type RunResult } from './helpers/ssh.js';
import { freePort, waitFor } from './helpers/wait.js';

describe('operations: JSON logs and metrics', function () {
  let origin = '';
  const env = useEnv({ proxyArgs: ['--log-format', 'json', '--metrics-ip', '127.0.0.1', '--metrics-port', '0'] });

  before(async function () {
    origin = await waitFor(() => metricsOrigin(env.proxy.logs()), { timeoutMs: 10_000, what: 'the metrics address in the log' });
  });

  const scrape = () => scrapeMetrics(origin);

  it('answers /health', async function () {
    const response = await fetch(`${origin}/health`);
    expect(response.status).to.equal(200);
    expect(await response.json()).to.deep.equal({ status: 'ok' });
  });

  it('moves the metric families with a login, a refusal and a session', async function () {
    const before = await scrape();
    const get = (m: Map<string, number>, key: string) => m.get(key) ?? 0;
    const bad = await env.ssh(['true'], ['-o', 'NumberOfPasswordPrompts=1', '-o', 'PreferredAuthentications=password'], {
      env: { JSP_TEST_TOKEN: 'wrong-token' },
    });
    expect(bad.code).to.equal(255);
    const ok = await env.ssh(['head -c 100000 /dev/zero'], ['-o', 'LogLevel=ERROR']);
    expect(ok.code).to.equal(0);
    expect(ok.stdout.length).to.equal(100000);
    // The session end is logged (and counted) once the daemon sees the client go.
    await waitFor(() => env.proxy.logs().split('\n').filter((l) => l.includes('session ended')).length >= 1, {
      timeoutMs: 10_000,
      what: 'the session end',
    });
    const after = await scrape();
    expect(get(after, 'jupyter_ssh_proxy_auth_attempts_total{method="password",result="failure"}')).to.equal(
      get(before, 'jupyter_ssh_proxy_auth_attempts_total{method="password",result="failure"}') + 1,
    );
    expect(get(after, 'jupyter_ssh_proxy_auth_attempts_total{method="keyboard-interactive",result="success"}')).to.be.greaterThan(
      get(before, 'jupyter_ssh_proxy_auth_attempts_total{method="keyboard-interactive",result="success"}'),
    );
    expect(get(after, 'jupyter_ssh_proxy_channels_opened_total{type="session"}')).to.be.greaterThan(
      get(before, 'jupyter_ssh_proxy_channels_opened_total{type="session"}'),
    );
    expect(get(after, 'jupyter_ssh_proxy_bytes_total{direction="to_client"}') - get(before, 'jupyter_ssh_proxy_bytes_total{direction="to_client"}')).to.be.greaterThan(100000);
    expect(get(after, 'jupyter_ssh_proxy_refusals_total{reason="client_left"}')).to.be.greaterThan(0);
    expect(get(after, 'jupyter_ssh_proxy_hub_request_duration_seconds_count{endpoint="user"}')).to.be.greaterThan(0);
    expect(after.has('jupyter_ssh_proxy_connections')).to.equal(true);
    // The first login of the fixture user started its server.
    expect(get(after, 'jupyter_ssh_proxy_spawn_duration_seconds_count{result="ready"}')).to.be.at.least(1);
    // Bounded cardinality: no user names or addresses in any label.
    for (const key of after.keys()) {
      expect(key).to.not.contain(env.user.name);
      expect(key).to.not.contain('127.0.0.1');
    }
  });

  it('writes every log line as a JSON object, connection lines with conn and peer', async function () {
    const lines = env.proxy.logs().trim().split('\n');
    expect(lines.length).to.be.greaterThan(5);
    const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    for (const entry of entries) expect(entry).to.include.keys('level', 'message', 'timestamp');
    const login = entries.find((e) => String(e.message).startsWith('login accepted'));
    expect(login, 'a login line').to.not.equal(undefined);
    expect(login!.conn).to.match(/^[0-9a-f]{6}$/);
    expect(login!.peer).to.match(/^127\.0\.0\.1:\d+$/);
    const end = entries.find((e) => String(e.message).startsWith('session ended'));
    expect(String(end!.message)).to.match(/bytes from client=\d+ to client=\d+ channels=session:1/);
    expect(env.proxy.logs()).to.not.contain(env.token);
  });
});

describe('operations: IPv6 listeners', function () {
  const env = useEnv();

  it('logs [::1]:PORT for the SSH and metrics listeners and serves a login there', async function () {
    const proxy = await startProxy(env.hub.url, ['--metrics-ip', '::1', '--metrics-port', '0'], { ip: '::1' });
    try {
      const logs = proxy.logs();
      expect(logs).to.match(new RegExp(`listening on \\[::1\\]:${proxy.port},`));
      const origin = metricsOrigin(logs);
      expect(origin, logs).to.match(/^http:\/\/\[::1\]:\d+$/);
      // The logged address is usable as written.
      const health = await fetch(`${origin}/health`);
      expect(health.status).to.equal(200);
      const r = await run('ssh', [...sshOptions(proxy.port), `${env.user.name}@::1`, 'echo', 'over-ipv6'], { env: askpassEnv(env.token) });
      expect(r.stdout.toString().trim(), r.stderr).to.equal('over-ipv6');
    } finally {
      await proxy.stop();
    }
  });
});

describe("operations: a sandbox around the daemon, which users' sessions would inherit", function () {
  const env = useEnv();
  const SANDBOX_WARNING = "users' sessions inherit this daemon's sandbox";

  it('says nothing when the daemon runs as a login would', function () {
    expect(env.proxy.logs()).to.include('listening on');
    expect(env.proxy.logs()).not.to.include(SANDBOX_WARNING);
  });

  /** A daemon started under `prefix` (a sandbox), its start-up warning, and a session's output of `command`. */
  async function sandboxed(prefix: string[], command: string): Promise<{ warning: string | undefined; session: RunResult }> {
    const proxy = await startProxy(env.hub.url, [], { commandPrefix: prefix });
    try {
      const session = await run('ssh', [...sshOptions(proxy.port), `${env.user.name}@127.0.0.1`, command], { env: askpassEnv(env.token) });
      return { warning: proxy.logLine(SANDBOX_WARNING), session };
    } finally {
      await proxy.stop();
    }
  }

  it('warns at start in a mount namespace of its own (ProtectHome=, PrivateTmp=, ...), and serves logins', async function () {
    const { warning, session } = await sandboxed(['unshare', '--mount', '--'], 'echo in');
    expect(warning).to.include('a mount namespace of its own');
    expect(warning).to.include('deploy/jupyter-ssh-proxy.service');
    expect(warning).not.to.include('no_new_privs');
    expect(session.stdout.toString(), session.stderr).to.equal('in\n');
  });

  it('warns at start under no_new_privs (NoNewPrivileges=), which a session then has too', async function () {
    const { warning, session } = await sandboxed(['setpriv', '--no-new-privs', '--'], 'grep NoNewPrivs /proc/self/status');
    expect(warning).to.include('no_new_privs');
    expect(warning).not.to.include('mount namespace');
    expect(session.stdout.toString(), session.stderr).to.match(/^NoNewPrivs:\s+1$/m);
  });
});

describe('operations: configuration', function () {
  let dir: string;
  const saved = { ...process.env };
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-config-'));
  });
  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
  });

  it('takes flags over environment over config file over defaults', function () {
    const file = path.join(dir, 'proxy.yaml');
    fs.writeFileSync(file, 'port: 2201\nlog-level: warn\nmax-auth-tries: 3\nspawn-timeout: 30\n');
    process.env.JUPYTER_SSH_PROXY_LOG_LEVEL = 'debug';
    process.env.JUPYTER_SSH_PROXY_MAX_AUTH_TRIES = '4';
    const config = parseArgs(['--config', file, '--max-auth-tries', '5', 'http://hub.example:8000']);
    expect(config.maxAuthTries, 'flag beats env and file').to.equal(5);
    expect(config.logLevel, 'env beats file').to.equal('debug');
    expect(config.port, 'file beats default').to.equal(2201);
    expect(config.spawnTimeoutMs).to.equal(30_000);
    expect(config.loginGraceTimeMs, 'default').to.equal(120_000);
    expect(config.hubApiUrl).to.equal('http://hub.example:8000/hub/api');
    expect(config.tokenPage).to.equal('http://hub.example:8000/hub/token');
  });

  it('reads a JSON config file too', function () {
    const file = path.join(dir, 'proxy.json');
    fs.writeFileSync(file, JSON.stringify({ 'unix-user': 'jupyter-{username}', 'sshd-option': ['RekeyLimit=1G', 'LogLevel=DEBUG'] }));
    const config = parseArgs(['--config', file, 'http://hub.example']);
    expect(config.unixUser).to.equal('jupyter-{username}');
    expect(config.sshdOptions).to.deep.equal(['RekeyLimit=1G', 'LogLevel=DEBUG']);
  });

  it('runs as a managed service from JUPYTERHUB_API_URL without a URL argument', function () {
    const config = parseArgs([], {
      JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api',
      JUPYTERHUB_API_TOKEN: 'service-token',
      JUPYTERHUB_HOST: 'https://hub.example.org',
      JUPYTERHUB_BASE_URL: '/',
    });
    expect(config.hubApiUrl).to.equal('http://127.0.0.1:8081/hub/api');
    expect(config.serviceToken).to.equal('service-token');
    expect(config.tokenPage).to.equal('https://hub.example.org/hub/token');
  });

  it('links users to --public-url, and keeps calling the Hub at URL', function () {
    const config = parseArgs(['--public-url', 'https://hub.example.org/jh', 'http://127.0.0.1:8000']);
    expect(config.hubApiUrl).to.equal('http://127.0.0.1:8000/hub/api');
    expect(config.tokenPage).to.equal('https://hub.example.org/jh/hub/token');
    expect(config.homePage).to.equal('https://hub.example.org/jh/hub/home');
    const managed = parseArgs(['--public-url', 'https://hub.example.org/'], { JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api', JUPYTERHUB_BASE_URL: '/' });
    expect(managed.tokenPage, 'over what JupyterHub tells a managed service').to.equal('https://hub.example.org/hub/token');
  });

  it('takes --authorized-keys-file only with a service token to start servers, and only the %h %u %% of sshd', function () {
    const config = parseArgs(['--authorized-keys-file', '/etc/ssh/keys/%u', 'http://hub.example'], { JUPYTERHUB_API_TOKEN: 'service-token' });
    expect(config.authorizedKeysFile).to.equal('/etc/ssh/keys/%u');
    expect(parseArgs(['http://hub.example']).authorizedKeysFile, 'off by default').to.equal(undefined);
    expect(() => parseArgs(['--authorized-keys-file', '.ssh/authorized_keys', 'http://hub.example'], {}, true)).to.throw(
      '--authorized-keys-file needs a JupyterHub service token in JUPYTERHUB_API_TOKEN',
    );
    expect(() => parseArgs(['--authorized-keys-file', '.ssh/keys_%d', 'http://hub.example'], { JUPYTERHUB_API_TOKEN: 't' }, true)).to.throw('knows %h, %u and %%, not %d');
  });

  it("takes --upstream websocket with a URL and a service token, the servers at the URL, with --authorized-keys-file (read in the servers) and --websocket-frames", function () {
    const token = { JUPYTERHUB_API_TOKEN: 'service-token' };
    const config = parseArgs(['--upstream', 'websocket', 'https://hub.example.org/jh/'], token);
    expect([config.upstream, config.serversUrl]).to.deep.equal(['websocket', 'https://hub.example.org/jh/']);
    expect(parseArgs(['http://hub.example']).upstream, 'the local sshd by default').to.equal('local-sshd');
    expect(() => parseArgs(['--upstream', 'websocket'], { ...token, JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api' }, true)).to.throw(
      '--upstream websocket needs the URL argument',
    );
    expect(parseArgs(['--upstream', 'websocket', '--authorized-keys-file', '.ssh/authorized_keys', 'http://hub.example'], token).authorizedKeysFile).to.equal('.ssh/authorized_keys');
    expect(() => parseArgs(['--upstream', 'websocket', '--authorized-keys-file', '.ssh/keys_%d', 'http://hub.example'], token, true)).to.throw('knows %h, %u and %%, not %d');
    expect(config.websocketFrames, 'the raw stream where the extension can, by default').to.equal(false);
    expect(parseArgs(['--upstream', 'websocket', '--websocket-frames', 'http://hub.example'], token).websocketFrames).to.equal(true);
    expect(() => parseArgs(['--websocket-frames', 'http://hub.example'], {}, true)).to.throw('--websocket-frames is for --upstream websocket');
  });

  it('reads the algorithm flags in sshd_config syntax, a removal given apart or joined with =', function () {
    const apart = parseArgs(['--ciphers', '-chacha20-poly1305@openssh.com', '--macs', '^hmac-sha2-512*', 'http://hub.example']);
    expect(apart.algorithms.ciphers).to.not.include('chacha20-poly1305@openssh.com');
    expect(apart.algorithms.ciphers[0]).to.equal('aes128-gcm@openssh.com');
    expect(apart.algorithms.macs.slice(0, 2)).to.deep.equal(['hmac-sha2-512-etm@openssh.com', 'hmac-sha2-512']);
    const joined = parseArgs(['--kex-algorithms=-ecdh-*,diffie-*', '--host-key-algorithms=ssh-ed25519', 'http://hub.example']);
    expect(joined.algorithms.kex).to.deep.equal([
      'mlkem768x25519-sha256',
      'sntrup761x25519-sha512',
      'sntrup761x25519-sha512@openssh.com',
      'curve25519-sha256',
      'curve25519-sha256@libssh.org',
    ]);
    expect(joined.algorithms.hostKey).to.deep.equal(['ssh-ed25519']);
    expect(joined.algorithms.ciphers, 'the default').to.include('chacha20-poly1305@openssh.com');
    expect(joined.preferAesGcm, 'the default').to.equal('ctr');
    expect(parseArgs(['--prefer-aes-gcm', 'no', '--ciphers', 'chacha20-poly1305@openssh.com', 'http://hub.example']).preferAesGcm).to.equal('no');
    process.env.JUPYTER_SSH_PROXY_CIPHERS = 'aes256-gcm@openssh.com';
    expect(parseArgs(['http://hub.example']).algorithms.ciphers).to.deep.equal(['aes256-gcm@openssh.com']);
  });

  const invalid: [string[], RegExp][] = [
    [['--port', '70000'], /--port must be 0-65535/],
    [['--max-auth-tries', '0'], /--max-auth-tries must be a positive integer/],
    [['--spawn-timeout', 'soon'], /--spawn-timeout must be a positive number of seconds/],
    [['--named-server-separator', '/'], /--named-server-separator must be non-empty without \/ :/],
    [['--unix-user', 'jupyter'], /--unix-user must contain \{username\}/],
    [['--public-url', 'hub.example.org'], /--public-url must be an http:\/\/ or https:\/\/ URL, got hub\.example\.org/],
    [['--log-level', 'loud'], /log-level.*Invalid values|Invalid values[\s\S]*log-level/],
    [['--bogus-flag'], /Unknown arguments?: bogus-flag/],
    [['--ciphers', 'aes128-cbc'], /--ciphers: aes128-cbc is not supported; choose from aes128-gcm@openssh.com,/],
    [['--kex-algorithms=-*'], /--kex-algorithms "-\*" leaves nothing to offer/],
    [['--macs='], /--macs needs a list of algorithms/],
    [['--prefer-aes-gcm', 'all', '--ciphers', 'chacha20-poly1305@openssh.com'], /--prefer-aes-gcm all needs an AES-GCM cipher in --ciphers/],
    [['--prefer-aes-gcm', 'yes'], /prefer-aes-gcm[\s\S]*Choices: "ctr", "all", "no"/],
    // The keys generated into the fresh KEYDIR are ed25519, ecdsa P-256 and RSA.
    [['--host-key-algorithms', 'ecdsa-sha2-nistp384'], /cannot start: --host-key-algorithms ecdsa-sha2-nistp384 matches none of the host keys in .*, which sign with ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256/],
    [[], /Give the JupyterHub URL/],
    [['--upstream', 'docker'], /upstream[\s\S]*Choices: "local-sshd", "websocket"/],
    [['--upstream', 'websocket'], /--upstream websocket needs a JupyterHub service token with access:servers in JUPYTERHUB_API_TOKEN/],
  ];
  for (const [args, message] of invalid) {
    it(`refuses ${args.join(' ') || 'a missing URL'} at start with the flag and the reason`, async function () {
      const url = args.length === 0 ? [] : ['http://127.0.0.1:9'];
      const env = { ...process.env };
      delete env.JUPYTERHUB_API_URL;
      const r = await run(process.execPath, [BIN, '-k', dir, '--runtime-dir', path.join(dir, 'run'), ...args, ...url], { env });
      expect(r.code).to.equal(1);
      // Flag errors go to stderr; errors found when loading (host keys) are logged.
      expect(r.stderr + r.stdout).to.match(message);
      expect(r.stderr).to.not.contain('Options:'); // a reason, not the whole help
    });
  }

  it('writes --pid-file before it listens, and removes it when it cannot start', async function () {
    // A port in use: the pid file was written, and must not outlive the failed start.
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const pidFile = path.join(dir, 'proxy.pid');
      const r = await run(process.execPath, [BIN, '-k', dir, '--runtime-dir', path.join(dir, 'run'), '--ip', '127.0.0.1', '-p', String(port), '--pid-file', pidFile, 'http://127.0.0.1:9']);
      expect(r.code).to.equal(1);
      expect(r.stdout).to.match(new RegExp(`cannot start: listen EADDRINUSE.*127\\.0\\.0\\.1:${port}`));
      expect(fs.existsSync(pidFile)).to.equal(false);
    } finally {
      taken.close();
    }
  });

  it('refuses a config file value just like a flag', async function () {
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(file, 'hub-timeout: -1\n');
    const r = await run(process.execPath, [BIN, '--config', file, 'http://127.0.0.1:9']);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.contain('--hub-timeout must be a positive number of seconds');
  });

  it('serves no metrics unless a port is given', async function () {
    const port = await freePort();
    const config = parseArgs(['http://hub.example']);
    expect(config.metricsPort).to.equal(undefined);
    expect(parseArgs(['--metrics-port', String(port), 'http://hub.example']).metricsPort).to.equal(port);
  });
});
