// The proxy core against the real OpenSSH client, the real sshd (started as
// `sshd -i` by the daemon) and a real JupyterHub.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useEnv } from './helpers/fixture.js';
import { createHubUser, createToken } from './helpers/hub.js';
import { startProxy } from './helpers/proxy.js';
import { RECENT_SSH_CLIENT, askpassEnv, fileCopyOptions, run, ssh, sshOptions } from './helpers/ssh.js';
import { createNamedUnixUser, createUnixUser, type UnixUser } from './helpers/unixuser.js';
import { childrenNamed } from './helpers/procs.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { waitFor } from './helpers/wait.js';

const QUIET = ['-o', 'LogLevel=ERROR'];

function sha256(data: Buffer | string): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function sha256File(file: string): string {
  return sha256(fs.readFileSync(file));
}

function shellQuote(arg: string): string {
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

describe('proxy core: commands and sessions', function () {
  const env = useEnv();
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-core-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('runs a command as the mapped unix user with exit status 0', async function () {
    const r = await env.ssh(['id -un; echo "$HOME"'], QUIET);
    expect(r.code).to.equal(0);
    expect(r.stdout.toString()).to.equal(`${env.user.name}\n${env.user.home}\n`);
  });

  it('passes a non-zero exit status through', async function () {
    const r = await env.ssh(['exit 3'], QUIET);
    expect(r.code).to.equal(3);
  });

  it('reports a remote command killed by a signal as ssh does (255, signal named with -v)', async function () {
    const r = await env.ssh(['kill -TERM $$'], ['-v']);
    expect(r.code).to.equal(255);
    // The exit-signal channel request travelled through the relay unchanged.
    expect(r.stderr).to.match(/exit-signal|signal/);
  });

  it('keeps stdout and stderr apart', async function () {
    const r = await env.ssh(['echo to-out; echo to-err >&2; echo more-out'], QUIET);
    expect(r.code).to.equal(0);
    expect(r.stdout.toString()).to.equal('to-out\nmore-out\n');
    expect(r.stderr).to.equal('to-err\n');
  });

  it("passes the client's locale (LANG, LC_*) as a stock Debian sshd does, and no other variable", async function () {
    // Debian's and macOS's ssh_config send LANG and LC_* (SendEnv); SetEnv sends them the same way.
    const r = await env.ssh(
      ['echo "lang=$LANG lc=$LC_JSP_TEST other=${JSP_NOT_ACCEPTED-unset}"'],
      [...QUIET, '-o', 'SetEnv=LANG=C.UTF-8 LC_JSP_TEST=from-client JSP_NOT_ACCEPTED=x'],
    );
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.equal('lang=C.UTF-8 lc=from-client other=unset\n');
  });

  it('streams stdin in (16 MiB, checksum intact)', async function () {
    const data = crypto.randomBytes(16 * 1024 * 1024);
    const r = await env.ssh(['sha256sum'], QUIET, { input: data });
    expect(r.code).to.equal(0);
    expect(r.stdout.toString().split(' ')[0]).to.equal(sha256(data));
  });

  // Every cipher the proxy offers on the client leg (lib/algorithms.ts), the
  // upstream leg staying AES-GCM: what the relay re-encrypts differs in
  // padding block, length field and MAC.
  for (const [cipher, mac] of [
    ['aes128-gcm@openssh.com', undefined],
    ['aes256-gcm@openssh.com', undefined],
    ['chacha20-poly1305@openssh.com', undefined],
    ['aes128-ctr', 'hmac-sha2-256-etm@openssh.com'],
    ['aes256-ctr', 'hmac-sha2-512'],
  ] as const) {
    it(`moves 8 MiB each way intact with ${cipher}${mac ? ` and ${mac}` : ''} on the client leg`, async function () {
      const data = crypto.randomBytes(8 * 1024 * 1024);
      const options = [...QUIET, '-c', cipher, ...(mac ? ['-m', mac] : [])];
      // stderr: the hash of what arrived, then the hash of what was sent.
      const r = await env.ssh(['sha256sum >&2; head -c 8388608 /dev/urandom | tee >(sha256sum >&2)'], options, { input: data });
      expect(r.code, r.stderr).to.equal(0);
      const [uploaded, downloaded] = r.stderr.trim().split('\n').map((line) => line.split(' ')[0]);
      expect(uploaded, 'upload checksum').to.equal(sha256(data));
      expect(r.stdout.length).to.equal(8 * 1024 * 1024);
      expect(downloaded, 'download checksum').to.equal(sha256(r.stdout));
    });
  }

  it('gives ssh -tt a pty with the client window size', async function () {
    const sshCommand = ['ssh', ...sshOptions(env.proxy.port), ...QUIET, '-tt', `${env.user.name}@127.0.0.1`, 'tty; stty size']
      .map(shellQuote)
      .join(' ');
    // script(1) gives ssh a local terminal whose size we set. Its stdin stays
    // open (onSpawn): at the end of its input script types a character into
    // the terminal, which the remote pty echoes as "^@", directly as through
    // the proxy, and once (CI) that echo came before `stty size`'s line.
    const r = await run('script', ['-qec', `stty rows 33 cols 77; ${sshCommand}`, '/dev/null'], {
      env: askpassEnv(env.token),
      onSpawn: () => {},
    });
    expect(r.code).to.equal(0);
    const out = r.stdout.toString();
    expect(out).to.match(/\/dev\/pts\/\d+/);
    expect(out).to.match(/^33 77\r?$/m);
  });

  it('prints no "Last login: ... from 127.0.0.1" at an interactive login (every login reaches sshd from the proxy)', async function () {
    // The second login is the one sshd would have a last login for.
    for (let i = 0; i < 2; i++) {
      const r = await env.ssh([], [...QUIET, '-tt'], { input: 'echo "login-$((6 * 7))"; exit\n' });
      expect(r.code, r.stderr).to.equal(0);
      const out = r.stdout.toString();
      expect(out).to.include('login-42');
      expect(out).to.not.match(/Last login/i);
    }
  });

  it('sftp puts and gets a 100 MB random file intact', async function () {
    this.timeout(120_000);
    const local = path.join(tmp, 'up.bin');
    fs.writeFileSync(local, crypto.randomBytes(100 * 1000 * 1000));
    const batch = path.join(tmp, 'batch');
    fs.writeFileSync(batch, `put ${local} sftp-up.bin\nget sftp-up.bin ${path.join(tmp, 'down.bin')}\nrm sftp-up.bin\n`);
    const r = await run('sftp', [...fileCopyOptions(env.proxy.port), ...QUIET, '-o', 'BatchMode=no', '-b', batch, `${env.user.name}@127.0.0.1`], {
      env: askpassEnv(env.token),
      timeoutMs: 110_000,
    });
    expect(r.code, r.stderr).to.equal(0);
    expect(sha256File(path.join(tmp, 'down.bin'))).to.equal(sha256File(local));
  });

  for (const mode of [[], ['-O']]) {
    const label = mode.length ? 'scp -O (legacy scp protocol)' : 'scp (sftp protocol)';
    it(`${label} copies a file there and back intact`, async function () {
      const local = path.join(tmp, 'scp.bin');
      fs.writeFileSync(local, crypto.randomBytes(5 * 1024 * 1024));
      const remote = `${env.user.name}@127.0.0.1:scp-${mode.length}.bin`;
      const opts = { env: askpassEnv(env.token) };
      const up = await run('scp', [...fileCopyOptions(env.proxy.port), ...QUIET, ...mode, local, remote], opts);
      expect(up.code, up.stderr).to.equal(0);
      const back = path.join(tmp, 'back.bin');
      const down = await run('scp', [...fileCopyOptions(env.proxy.port), ...QUIET, ...mode, remote, back], opts);
      expect(down.code, down.stderr).to.equal(0);
      expect(sha256File(back)).to.equal(sha256File(local));
    });
  }
  it('rsync mirrors a directory tree there and back', async function () {
    const src = path.join(tmp, 'tree');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'a.txt'), 'alpha\n');
    fs.writeFileSync(path.join(src, 'sub', 'b.bin'), crypto.randomBytes(300_000));
    const rsh = ['ssh', ...sshOptions(env.proxy.port), ...QUIET].map(shellQuote).join(' ');
    const opts = { env: askpassEnv(env.token) };
    const up = await run('rsync', ['-a', '-e', rsh, `${src}/`, `${env.user.name}@127.0.0.1:rsync-tree/`], opts);
    expect(up.code, up.stderr).to.equal(0);
    const back = path.join(tmp, 'back');
    const down = await run('rsync', ['-a', '-e', rsh, `${env.user.name}@127.0.0.1:rsync-tree/`, `${back}/`], opts);
    expect(down.code, down.stderr).to.equal(0);
    expect(fs.readFileSync(path.join(back, 'a.txt'), 'utf8')).to.equal('alpha\n');
    expect(sha256File(path.join(back, 'sub', 'b.bin'))).to.equal(sha256File(path.join(src, 'sub', 'b.bin')));
  });
  it('reaps the sshd child when the client vanishes mid-session', async function () {
    const daemon = env.proxy.child.pid!;
    const child = spawn('ssh', [...sshOptions(env.proxy.port), ...QUIET, `${env.user.name}@127.0.0.1`, 'echo started; sleep 300'], {
      env: askpassEnv(env.token),
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    try {
      await waitFor(() => child.stdout.read()?.toString().includes('started'), { timeoutMs: 20_000, what: 'the session' });
      expect(childrenNamed(daemon, 'sshd')).to.have.length(1);
      child.kill('SIGKILL');
      await waitFor(() => childrenNamed(daemon, 'sshd').length === 0, { timeoutMs: 15_000, what: 'sshd to be reaped' });
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('proxy core: authentication outcomes', function () {
  const env = useEnv();

  it('refuses a wrong token with a clear line, and the next client still gets in', async function () {
    const bad = await ssh(env.proxy.port, env.user.name, 'not-a-token', ['true'], ['-o', 'NumberOfPasswordPrompts=1']);
    expect(bad.code).to.equal(255);
    expect(bad.stderr).to.contain('JupyterHub did not accept that token');
    expect(bad.stderr).to.contain(`${env.hub.url}/hub/token`);
    const good = await env.ssh(['echo in'], QUIET);
    expect(good.code).to.equal(0);
    expect(good.stdout.toString()).to.equal('in\n');
  });

  it("a script hands the token over as docs/users.md says: SSH_ASKPASS from a file, no DISPLAY, sftp -b with BatchMode=no", async function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-script-'));
    try {
      fs.writeFileSync(path.join(dir, 'hub-token'), `${env.token}\n`, { mode: 0o600 });
      const askpass = path.join(dir, 'hub-askpass');
      fs.writeFileSync(askpass, `#!/bin/sh\nexec cat ${path.join(dir, 'hub-token')}\n`, { mode: 0o700 });
      const batch = path.join(dir, 'commands.txt');
      fs.writeFileSync(batch, 'pwd\n');
      const scriptEnv: NodeJS.ProcessEnv = { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force' };
      delete scriptEnv.DISPLAY;
      const dest = `${env.user.name}@127.0.0.1`;

      const command = await run('ssh', [...sshOptions(env.proxy.port), ...QUIET, dest, 'echo in'], { env: scriptEnv });
      expect(command.code, command.stderr).to.equal(0);
      expect(command.stdout.toString()).to.equal('in\n');
      const sftp = await run('sftp', [...fileCopyOptions(env.proxy.port), ...QUIET, '-o', 'BatchMode=no', '-b', batch, dest], { env: scriptEnv });
      expect(sftp.code, sftp.stderr).to.equal(0);
      expect(sftp.stdout.toString()).to.contain(`Remote working directory: ${env.user.home}`);
      // What the troubleshooting table explains: sftp -b alone forbids the prompt.
      const batchMode = await run('sftp', [...fileCopyOptions(env.proxy.port), ...QUIET, '-b', batch, dest], { env: scriptEnv });
      expect(batchMode.code).to.equal(255);
      expect(batchMode.stderr).to.contain('Permission denied (keyboard-interactive,password).');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('shows the --public-url links, while the Hub is still called at URL', async function () {
    const proxy = await startProxy(env.hub.url, ['--public-url', 'https://hub.example.org/jh/']);
    try {
      const bad = await ssh(proxy.port, env.user.name, 'not-a-token', ['true'], ['-o', 'NumberOfPasswordPrompts=1']);
      expect(bad.code).to.equal(255);
      expect(bad.stderr).to.contain('get a new one at https://hub.example.org/jh/hub/token');
      expect(bad.stderr).not.to.contain(env.hub.url);
      const good = await ssh(proxy.port, env.user.name, env.token, ['echo in'], QUIET);
      expect(good.stdout.toString(), good.stderr).to.equal('in\n');
      // Without it, the start-up log says the link users get is a loopback one.
      expect(env.proxy.logs()).to.include(`users are shown ${env.hub.url}/hub/token to get a token, an address only this machine reaches`);
      expect(proxy.logs()).not.to.include('users are shown');
    } finally {
      await proxy.stop();
    }
  });

  it('accepts the token with password authentication too', async function () {
    const r = await env.ssh(['echo pw'], [...QUIET, '-o', 'PreferredAuthentications=password']);
    expect(r.code).to.equal(0);
    expect(r.stdout.toString()).to.equal('pw\n');
  });

  it("refuses another user's token, naming its owner and the missing scope", async function () {
    const other = await createUnixUser('o');
    try {
      await createHubUser(env.hub, other.name);
      const r = await ssh(env.proxy.port, other.name, env.token, ['true'], ['-o', 'NumberOfPasswordPrompts=1']);
      expect(r.code).to.equal(255);
      expect(r.stderr).to.contain(
        `The token of JupyterHub user '${env.user.name}' lacks the scope access:servers!server=${other.name}/`,
      );
      expect(r.stderr).to.contain(`; log in as '${env.user.name}' to reach ${env.user.name}'s own server`);
    } finally {
      await other.remove();
    }
  });

  it('disconnects after --max-auth-tries failures (default 6)', async function () {
    const r = await ssh(env.proxy.port, env.user.name, 'wrong', ['true'], ['-o', 'NumberOfPasswordPrompts=10']);
    expect(r.code).to.equal(255);
    expect(r.stderr).to.contain('Too many authentication failures');
    expect(r.stderr.match(/JupyterHub did not accept that token/g)).to.have.length(6);
  });

  it('explains a Hub user without a unix account', async function () {
    const name = `jsp-nounix-${crypto.randomBytes(3).toString('hex')}`;
    await createHubUser(env.hub, name);
    const { token } = await createToken(env.hub, name);
    const r = await ssh(env.proxy.port, name, token, ['true']);
    expect(r.code).to.equal(255);
    expect(r.stderr).to.contain(`There is no account '${name}' for JupyterHub user '${name}' on this server`);
    // The daemon keeps serving everyone else.
    expect((await env.ssh(['echo still'], QUIET)).stdout.toString()).to.equal('still\n');
  });

  it('closes a connection that does not log in within --login-grace-time', async function () {
    const strict = await startProxy(env.hub.url, ['--login-grace-time', '1']);
    try {
      const started = Date.now();
      const socket = net.connect(strict.port, '127.0.0.1');
      let received = '';
      socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
      await new Promise<void>((resolve, reject) => {
        socket.once('close', () => resolve());
        socket.once('error', reject);
        setTimeout(() => reject(new Error('still open after 10 s')), 10_000).unref();
      });
      expect(received).to.match(/^SSH-2\.0-jupyter-ssh-proxy/);
      expect(Date.now() - started).to.be.within(900, 5000);
    } finally {
      await strict.stop();
    }
  });

  it('explains a missing sshd binary, and keeps serving', async function () {
    const broken = await startProxy(env.hub.url, ['--sshd', '/nonexistent/sshd']);
    try {
      for (let i = 0; i < 2; i++) {
        const r = await ssh(broken.port, env.user.name, env.token, ['true']);
        expect(r.code).to.equal(255);
        expect(r.stderr).to.contain('The SSH server for your environment is not installed');
      }
      expect(broken.logs()).to.contain('sshd not found at /nonexistent/sshd');
    } finally {
      await broken.stop();
    }
  });

  it('explains an sshd that dies before the login completes', async function () {
    // /bin/false stands in for an sshd that exits at once.
    const broken = await startProxy(env.hub.url, ['--sshd', '/bin/false']);
    try {
      const r = await ssh(broken.port, env.user.name, env.token, ['true']);
      expect(r.code).to.equal(255);
      expect(r.stderr).to.contain('The SSH server for your environment refused the login');
      expect(broken.logs()).to.match(/upstream login failed: connection closed/);
    } finally {
      await broken.stop();
    }
  });
});

describe("proxy core: --unix-user tljh (The Littlest JupyterHub's accounts)", function () {
  /** Stands in for TLJH's user environment, /opt/tljh/user (docs/deploy.md). */
  const userEnv = path.join(os.tmpdir(), `jsp-userenv-${process.pid}`);
  const env = useEnv({
    proxyArgs: ['--unix-user', 'tljh', '--sshd-option', `SetEnv=PATH=${userEnv}/bin:/usr/local/bin:/usr/bin:/bin`],
  });
  let mapped: string;
  let mappedUser: UnixUser | undefined;
  before(async function () {
    mapped = `jupyter-${env.user.name}`;
    mappedUser = await createNamedUnixUser(mapped);
    fs.mkdirSync(path.join(userEnv, 'bin'), { recursive: true, mode: 0o755 });
    fs.writeFileSync(path.join(userEnv, 'bin', 'python3'), '#!/bin/sh\necho python of the user environment\n', { mode: 0o755 });
  });
  after(async function () {
    await mappedUser?.remove();
    fs.rmSync(userEnv, { recursive: true, force: true });
  });

  it('maps Hub users to unix users with --unix-user', async function () {
    const r = await env.ssh(['id -un'], QUIET);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.equal(`${mapped}\n`);
  });

  it('logs a Hub user with a long name in to the account TLJH cut and hashed for it', async function () {
    // TLJH's generate_system_username('jupyter-' + name), run with Python's hashlib.
    const hubName = 'jsp-tljh-a-rather-long-hub-name';
    const account = 'jupyter-jsp-tljh-a-rather--30e67';
    // The test Hub's LocalProcessSpawner runs the server as the Hub name: both accounts exist.
    const accounts: UnixUser[] = [];
    try {
      for (const name of [hubName, account]) accounts.push(await createNamedUnixUser(name));
      await createHubUser(env.hub, hubName);
      const { token } = await createToken(env.hub, hubName);
      const r = await ssh(env.proxy.port, hubName, token, ['id -un'], QUIET, { timeoutMs: 60_000 });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.toString()).to.equal(`${account}\n`);
    } finally {
      // Deleting the Hub user stops its server, so no killed server waits for the Hub to reap it.
      const deleted = await env.hub.api('DELETE', `/users/${hubName}`);
      expect([204, 404], JSON.stringify(deleted.body)).to.include(deleted.status);
      for (const user of accounts) await user.remove();
    }
  });

  it("puts the user environment first on the PATH of commands and of VS Code's bash on stdin (SetEnv, as docs/deploy.md says)", async function () {
    const command = await env.ssh(['command -v python3; python3'], QUIET);
    expect(command.code, command.stderr).to.equal(0);
    expect(command.stdout.toString()).to.equal(`${userEnv}/bin/python3\npython of the user environment\n`);
    const onStdin = await env.ssh(['bash'], [...QUIET, '-T'], { input: 'python3\n' });
    expect(onStdin.code, onStdin.stderr).to.equal(0);
    expect(onStdin.stdout.toString()).to.equal('python of the user environment\n');
  });

  it('refuses a login as the unix name, pointing to the Hub name', async function () {
    const r = await ssh(env.proxy.port, mapped, env.token, ['true'], ['-o', 'NumberOfPasswordPrompts=1']);
    expect(r.code).to.equal(255);
    expect(r.stderr).to.contain(
      `The token of JupyterHub user '${env.user.name}' lacks the scope access:servers!server=${mapped}/ ` +
        `(or access:servers!user=${mapped}) needed to log in as '${mapped}'; ` +
        `log in as '${env.user.name}' to reach ${env.user.name}'s own server`,
    );
  });
});

describe('proxy core: host keys', function () {
  const env = useEnv();

  it('serves the KEYDIR keys (all three types, as written to the .pub files)', async function () {
    const r = await run('ssh-keyscan', ['-p', String(env.proxy.port), '-t', 'ed25519,ecdsa,rsa', '127.0.0.1']);
    expect(r.code).to.equal(0);
    const served = new Set(r.stdout.toString().trim().split('\n').map((l) => l.split(' ').slice(1, 3).join(' ')));
    for (const name of ['ssh_host_ed25519_key', 'ssh_host_ecdsa_key', 'ssh_host_rsa_key']) {
      const file = path.join(env.proxy.keyDir, name);
      expect(fs.statSync(file).mode & 0o777).to.equal(0o600);
      const pub = fs.readFileSync(`${file}.pub`, 'utf8').split(' ').slice(0, 2).join(' ');
      expect(served.has(pub), `${name} served`).to.equal(true);
      // The start-up log lists what ssh asks users to confirm, as ssh-keygen -l shows it.
      const keygen = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`]);
      const [, print] = keygen.stdout.toString().split(' ');
      expect(env.proxy.logLine('host key fingerprints:'), name).to.include(print);
    }
  });

  for (const algo of ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'rsa-sha2-512', 'rsa-sha2-256']) {
    it(`logs in with host key algorithm ${algo}`, async function () {
      const r = await env.ssh(['echo ok'], [...QUIET, '-o', `HostKeyAlgorithms=${algo}`]);
      expect(r.code, r.stderr).to.equal(0);
    });
  }

  it('refuses the SHA-1 ssh-rsa signature algorithm', async function () {
    const r = await env.ssh(['true'], ['-o', 'HostKeyAlgorithms=ssh-rsa']);
    expect(r.code).to.equal(255);
    expect(r.stderr).to.contain('no matching host key type');
  });
});

describe('proxy core: the algorithms offered to clients (--ciphers, --kex-algorithms, --host-key-algorithms)', function () {
  // sshd_config's syntax; a removal given apart from its flag, as Ciphers -NAME reads.
  // OpenSSH clients prefer chacha20-poly1305, then the CTR modes, then AES-GCM.
  const env = useEnv({
    proxyArgs: [
      '--ciphers', '-chacha20-poly1305@openssh.com,aes*-ctr',
      '--kex-algorithms=-ecdh-sha2-*,mlkem*,sntrup*',
      '--host-key-algorithms', 'ssh-ed25519,rsa-sha2-512',
      '--metrics-ip', '127.0.0.1', '--metrics-port', '0',
    ],
  });

  it('gives a default OpenSSH client AES-GCM once chacha20-poly1305 and the CTR modes are removed', async function () {
    const r = await env.ssh(['echo ok'], ['-v']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.equal('ok\n');
    expect(r.stderr).to.contain('kex: algorithm: curve25519-sha256');
    expect(r.stderr).to.contain('kex: host key algorithm: ssh-ed25519');
    expect(r.stderr).to.contain('kex: server->client cipher: aes128-gcm@openssh.com');
    expect(r.stderr).to.contain('kex: client->server cipher: aes128-gcm@openssh.com');
  });

  it('gives clients that prefer a post-quantum method curve25519-sha256 once the hybrids are removed', async function () {
    for (const client of [RECENT_SSH_CLIENT, 'ssh']) {
      const r = await env.ssh(['true'], ['-v'], { client });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stderr, client).to.contain('kex: algorithm: curve25519-sha256');
    }
  });

  for (const [what, options, reason, flag] of [
    ['cipher', ['-c', 'chacha20-poly1305@openssh.com,aes128-ctr'], 'no matching cipher found', 'ciphers'],
    ['key exchange', ['-o', 'KexAlgorithms=ecdh-sha2-nistp256'], 'no matching key exchange method found', 'kex-algorithms'],
    ['host key algorithm', ['-o', 'HostKeyAlgorithms=ecdsa-sha2-nistp256,rsa-sha2-256'], 'no matching host key type found', 'host-key-algorithms'],
  ] as const) {
    it(`refuses a client that accepts only a removed ${what}, with OpenSSH's reason, logs which flag, and serves the next`, async function () {
      const logged = env.proxy.logs().length;
      const refused = await env.ssh(['true'], [...options]);
      expect(refused.code).to.equal(255);
      expect(refused.stderr).to.contain(reason);
      await waitFor(() => env.proxy.logs().slice(logged).match(/info: \[\w+ [\d.:]+\] key exchange failed: the client accepts none of --(\S+) \(Handshake failed: no matching /)?.[1], {
        timeoutMs: 5_000,
        what: 'the info line',
      }).then((logFlag) => expect(logFlag).to.equal(flag));
      const next = await env.ssh(['echo next'], QUIET);
      expect(next.code, next.stderr).to.equal(0);
      expect(next.stdout.toString()).to.equal('next\n');
    });
  }

  it('counts such a client as a refusal for no matching algorithm', async function () {
    const origin = await waitFor(() => metricsOrigin(env.proxy.logs()), { timeoutMs: 10_000, what: 'the metrics address in the log' });
    const refusals = async () => (await scrapeMetrics(origin)).get('jupyter_ssh_proxy_refusals_total{reason="no_matching_algorithm"}') ?? 0;
    const before = await refusals();
    const refused = await env.ssh(['true'], ['-c', 'chacha20-poly1305@openssh.com']);
    expect(refused.code).to.equal(255);
    await waitFor(async () => (await refusals()) === before + 1 || undefined, { timeoutMs: 5_000, what: 'the refusal counted' });
  });

  it('serves only the host keys of the algorithms offered (ssh-keyscan)', async function () {
    const r = await run('ssh-keyscan', ['-p', String(env.proxy.port), '-t', 'ed25519,ecdsa,rsa', '127.0.0.1']);
    const types = r.stdout.toString().trim().split('\n').map((l) => l.split(' ')[1]).sort();
    expect(types).to.deep.equal(['ssh-ed25519', 'ssh-rsa']);
  });

  it('logs each list that differs from the defaults', function () {
    const logs = env.proxy.logs();
    expect(logs).to.contain('--ciphers: offering clients aes128-gcm@openssh.com,aes256-gcm@openssh.com\n');
    expect(logs).to.contain('--kex-algorithms: offering clients curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,');
    expect(logs).to.contain('--host-key-algorithms: offering clients ssh-ed25519,rsa-sha2-512');
    expect(logs).to.not.contain('--macs: offering');
  });
});

describe('proxy core: post-quantum key exchange (mlkem768x25519-sha256, sntrup761x25519-sha512)', function () {
  const env = useEnv({ proxyArgs: ['--metrics-ip', '127.0.0.1', '--metrics-port', '0'] });

  /** The key exchange method of each key exchange `ssh -v` ran, in order. */
  const kexMethods = (stderr: string) => [...stderr.matchAll(/kex: algorithm: (\S+)/g)].map((m) => m[1]!);

  /** The methods of the key exchanges of a 6 MiB upload by `client` with a rekey every MiB, which arrives intact. */
  const methodsOfRekeyedUpload = async (client: string) => {
    const data = crypto.randomBytes(6 * 1024 * 1024);
    const r = await env.ssh(['sha256sum >&2; echo done'], ['-v', '-o', 'RekeyLimit=1M'], { client, input: data });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.equal('done\n');
    expect(remoteHashes(r.stderr)).to.deep.equal([sha256(data)]);
    const methods = kexMethods(r.stderr);
    expect(methods.length, 'key exchanges: the first and the rekeys every MiB').to.be.at.least(4);
    return new Set(methods);
  };

  it("gives OpenSSH 9.9 and later their first choice, also in every rekey of a transfer, which arrives intact", async function () {
    const version = await run(RECENT_SSH_CLIENT, ['-V']);
    expect(version.stderr, `${RECENT_SSH_CLIENT}: scripts/install-deps.sh --test unpacks OpenSSH 10 from bookworm-backports`).to.match(/^OpenSSH_(9\.9|[1-9]\d\.)/);
    expect(await methodsOfRekeyedUpload(RECENT_SSH_CLIENT)).to.deep.equal(new Set(['mlkem768x25519-sha256']));
  });

  it('runs it again in the key exchange of its own that moves a client on AES-CTR to AES-GCM (--prefer-aes-gcm ctr)', async function () {
    const r = await env.ssh(['head -c 16777216 /dev/zero'], ['-v', '-c', 'aes128-ctr,aes128-gcm@openssh.com'], { client: RECENT_SSH_CLIENT });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.equals(Buffer.alloc(16 * 1024 * 1024))).to.equal(true);
    expect(kexCiphers(r.stderr)).to.deep.equal(['aes128-ctr', 'aes128-gcm@openssh.com']);
    expect(kexMethods(r.stderr)).to.deep.equal(['mlkem768x25519-sha256', 'mlkem768x25519-sha256']);
  });

  it("gives Debian 12's OpenSSH 9.2, which has no ML-KEM, its first choice, sntrup761x25519-sha512, also in every rekey of a transfer, which arrives intact", async function () {
    expect(await methodsOfRekeyedUpload('ssh')).to.deep.equal(new Set(['sntrup761x25519-sha512']));
  });

  it('runs it under the name OpenSSH 9.0 to 9.8 give it, sntrup761x25519-sha512@openssh.com, and for OpenSSH 10 too', async function () {
    for (const client of ['ssh', RECENT_SSH_CLIENT]) {
      const r = await env.ssh(['echo ok'], ['-v', '-o', 'KexAlgorithms=sntrup761x25519-sha512@openssh.com'], { client });
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.toString()).to.equal('ok\n');
      expect(kexMethods(r.stderr), client).to.deep.equal(['sntrup761x25519-sha512@openssh.com']);
    }
  });

  it('says so in the start-up line, and logs and counts each login with its key exchange method', async function () {
    expect(env.proxy.logs()).to.match(/packet relay loop .*, post-quantum key exchange offered \(mlkem768x25519-sha256, sntrup761x25519-sha512, sntrup761x25519-sha512@openssh.com\)\n/);
    const origin = metricsOrigin(env.proxy.logs())!;
    const counted = async (method: string) => (await scrapeMetrics(origin)).get(`jupyter_ssh_proxy_login_key_exchanges_total{method="${method}"}`) ?? 0;
    const methods = ['mlkem768x25519-sha256', 'sntrup761x25519-sha512', 'curve25519-sha256'];
    const before = await Promise.all(methods.map(counted));
    const logged = env.proxy.logs().length;
    for (const [client, options] of [[RECENT_SSH_CLIENT, []], ['ssh', []], ['ssh', ['-o', 'KexAlgorithms=curve25519-sha256']]] as const) {
      expect((await env.ssh(['true'], [...QUIET, ...options], { client })).code).to.equal(0);
    }
    const logins = [...env.proxy.logs().slice(logged).matchAll(/login accepted: .* kex=(\S+)\n/g)].map((m) => m[1]!);
    expect(logins).to.deep.equal(methods);
    expect(await Promise.all(methods.map(counted))).to.deep.equal(before.map((n) => n + 1));
  });
});

describe('proxy core: keystroke timing obfuscation (ping@openssh.com, OpenSSH 9.5 and later)', function () {
  const env = useEnv();

  it('lets the client hide its keystrokes among chaff PINGs, which the proxy answers, while the session works', async function () {
    const typed = 'hello\n';
    let echoed = '';
    const r = await env.ssh(['cat'], ['-tt', '-vvv'], {
      client: RECENT_SSH_CLIENT,
      onSpawn: (child) => {
        child.stdout!.on('data', (chunk: Buffer) => (echoed += chunk.toString()));
        void (async () => {
          // One keystroke at a time, each after the echo of the one before.
          for (const [i, key] of [...typed].entries()) {
            await waitFor(() => echoed.replace(/\r/g, '').length >= i || undefined, { timeoutMs: 10_000, what: `the echo of keystroke ${i}` });
            child.stdin!.write(key);
          }
          await waitFor(() => echoed.includes('hello\r\nhello') || undefined, { timeoutMs: 10_000, what: "cat's answer" });
          child.stdin!.write('\x04');
        })().catch((err: Error) => {
          echoed += `\n${err.message}`;
          child.kill();
        });
      },
    });
    expect(r.code, `${echoed}\n${r.stderr}`).to.equal(0);
    expect(r.stderr).to.match(/obfuscate_keystroke_timing: starting: interval ~\d+ms/);
    const chaff = [...r.stderr.matchAll(/obfuscate_keystroke_timing: stopping: .*\((\d+) chaff packets sent\)/g)].map((m) => Number(m[1]));
    expect(chaff.reduce((a, b) => a + b, 0), 'chaff packets').to.be.greaterThan(0);
    expect(r.stderr).to.not.match(/UNIMPLEMENTED|Received disconnect/);
  });
});

/** The ciphers each key exchange of `ssh -v` chose, in order. */
function kexCiphers(stderr: string): string[] {
  return [...stderr.matchAll(/kex: server->client cipher: (\S+)/g)].map((m) => m[1]!);
}

/** The hashes a remote `sha256sum >&2` printed among ssh -v's lines, in order. */
function remoteHashes(stderr: string): string[] {
  return [...stderr.matchAll(/^([0-9a-f]{64}) {2}-$/gm)].map((m) => m[1]!);
}

describe('proxy core: AES-GCM for clients on AES-CTR (--prefer-aes-gcm ctr, the default)', function () {
  const env = useEnv();

  it('switches a client that chose AES-CTR (as PuTTY and paramiko do) and offers AES-GCM once it moves bulk data, both directions intact', async function () {
    const data = crypto.randomBytes(32 * 1024 * 1024);
    const r = await env.ssh(['sha256sum >&2; head -c 33554432 /dev/urandom | tee >(sha256sum >&2)'], ['-v', '-c', 'aes128-ctr,aes128-gcm@openssh.com'], {
      input: data,
    });
    expect(r.code, r.stderr).to.equal(0);
    expect(kexCiphers(r.stderr)).to.deep.equal(['aes128-ctr', 'aes128-gcm@openssh.com']);
    expect(remoteHashes(r.stderr), 'upload, then download checksum').to.deep.equal([sha256(data), sha256(r.stdout)]);
    expect(r.stdout.length).to.equal(32 * 1024 * 1024);
  });

  it('leaves a client on chacha20-poly1305 alone', async function () {
    const r = await env.ssh(['head -c 16777216 /dev/zero'], ['-v']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.length).to.equal(16 * 1024 * 1024);
    expect(kexCiphers(r.stderr)).to.deep.equal(['chacha20-poly1305@openssh.com']);
  });
});

describe('proxy core: --prefer-aes-gcm all', function () {
  // sshd rekeys every 2 MiB meanwhile: the upstream leg's exchanges overlap the switch.
  const env = useEnv({ proxyArgs: ['--prefer-aes-gcm', 'all', '--sshd-option', 'RekeyLimit=2M', '--metrics-ip', '127.0.0.1', '--metrics-port', '0'] });
  const switches = async () =>
    (await scrapeMetrics(await waitFor(() => metricsOrigin(env.proxy.logs()), { timeoutMs: 10_000, what: 'the metrics address' }))).get(
      'jupyter_ssh_proxy_aes_gcm_switches_total',
    ) ?? 0;

  for (const direction of ['download', 'upload'] as const) {
    it(`switches a default OpenSSH client from chacha20-poly1305 to AES-GCM once it moves bulk data (${direction}, 64 MiB intact)`, async function () {
      const before = await switches();
      const data = crypto.randomBytes(64 * 1024 * 1024);
      // stderr: the hash of what arrived, then the hash of what was sent.
      const command = direction === 'download' ? 'head -c 67108864 /dev/urandom | tee >(sha256sum >&2)' : 'sha256sum >&2';
      const r = await env.ssh([command], ['-v'], { input: direction === 'upload' ? data : Buffer.alloc(0) });
      expect(r.code, r.stderr).to.equal(0);
      expect(kexCiphers(r.stderr)).to.deep.equal(['chacha20-poly1305@openssh.com', 'aes128-gcm@openssh.com']);
      expect(remoteHashes(r.stderr), 'the checksum').to.deep.equal([sha256(direction === 'download' ? r.stdout : data)]);
      if (direction === 'download') expect(r.stdout.length).to.equal(64 * 1024 * 1024);
      expect(await switches()).to.equal(before + 1);
    });
  }

  it('switches while the client rekeys every MiB itself and sshd every 2 MiB, both directions at once intact', async function () {
    const data = crypto.randomBytes(48 * 1024 * 1024);
    const r = await env.ssh(['sha256sum >&2; head -c 50331648 /dev/urandom | tee >(sha256sum >&2)'], ['-v', '-o', 'RekeyLimit=1M'], { input: data });
    expect(r.code, r.stderr).to.equal(0);
    const ciphers = kexCiphers(r.stderr);
    expect(ciphers[0]).to.equal('chacha20-poly1305@openssh.com');
    expect(ciphers.length, 'key exchanges').to.be.greaterThan(20);
    expect(ciphers.slice(-10), 'after the switch').to.deep.equal(Array(10).fill('aes128-gcm@openssh.com'));
    expect(remoteHashes(r.stderr), 'upload, then download checksum').to.deep.equal([sha256(data), sha256(r.stdout)]);
    expect(r.stdout.length).to.equal(48 * 1024 * 1024);
  });

  it('switches an sftp client, files intact both ways', async function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-aesgcm-'));
    try {
      const local = path.join(dir, 'up.bin');
      fs.writeFileSync(local, crypto.randomBytes(32 * 1024 * 1024));
      const remote = `aesgcm-${process.pid}.bin`;
      const batch = path.join(dir, 'batch');
      fs.writeFileSync(batch, `put ${local} ${remote}\nget ${remote} ${path.join(dir, 'down.bin')}\nrm ${remote}\n`);
      const r = await run('sftp', [...fileCopyOptions(env.proxy.port), '-v', '-o', 'BatchMode=no', '-b', batch, `${env.user.name}@127.0.0.1`], {
        env: askpassEnv(env.token),
      });
      expect(r.code, r.stderr.toString()).to.equal(0);
      expect(kexCiphers(r.stderr.toString())).to.deep.equal(['chacha20-poly1305@openssh.com', 'aes128-gcm@openssh.com']);
      expect(sha256File(path.join(dir, 'down.bin'))).to.equal(sha256File(local));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('leaves an interactive session and a client that does not offer AES-GCM alone', async function () {
    const before = await switches();
    const small = await env.ssh(['echo small'], ['-v']);
    expect(small.code, small.stderr).to.equal(0);
    expect(kexCiphers(small.stderr)).to.deep.equal(['chacha20-poly1305@openssh.com']);
    const chachaOnly = await env.ssh(['head -c 16777216 /dev/zero'], ['-v', '-c', 'chacha20-poly1305@openssh.com']);
    expect(chachaOnly.code, chachaOnly.stderr).to.equal(0);
    expect(chachaOnly.stdout.length).to.equal(16 * 1024 * 1024);
    expect(kexCiphers(chachaOnly.stderr)).to.deep.equal(['chacha20-poly1305@openssh.com']);
    expect(await switches()).to.equal(before);
  });
});

describe('proxy core: rekeying on both legs', function () {
  const env = useEnv({ proxyArgs: ['--sshd-option', 'RekeyLimit=1M', '--metrics-ip', '127.0.0.1', '--metrics-port', '0'] });

  it('streams 1 GiB with RekeyLimit=1M on the client and on sshd, checksum intact, on the sockets between key exchanges', async function () {
    this.timeout(600_000);
    const origin = await waitFor(() => metricsOrigin(env.proxy.logs()), { timeoutMs: 10_000, what: 'the metrics address in the log' });
    const onSockets = async () => (await scrapeMetrics(origin)).get('jupyter_ssh_proxy_packets_forwarded_total{path="socket_relay"}') ?? 0;
    const before = await onSockets();
    // The remote side hashes exactly what it sends; stderr carries the hash.
    const r = await env.ssh(
      ['head -c 1073741824 /dev/urandom | tee >(sha256sum >&2)'],
      [...QUIET, '-o', 'RekeyLimit=1M'],
      { timeoutMs: 580_000 },
    );
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.length).to.equal(1024 * 1024 * 1024);
    expect(r.stderr.split(' ')[0]).to.equal(sha256(r.stdout));
    // The daemon logs the session end once it sees the client go.
    const m = await waitFor(() => /key exchanges client=(\d+) upstream=(\d+)/.exec(env.proxy.logs()) ?? undefined, {
      timeoutMs: 10_000,
      what: 'the session end in the log',
    });
    // 1 GiB at 1 MiB per rekey: hundreds of key exchanges on each leg.
    expect(Number(m![1])).to.be.greaterThan(100);
    expect(Number(m![2])).to.be.greaterThan(100);
    // Each key exchange hands the socket relay's direction back to the leg; the next bulk read moves it back (lib/socketrelay.ts).
    const relayed = (await onSockets()) - before;
    // (8,451 of the ~33,000 in one run: a rekey every 32 packets.)
    expect(relayed, 'packets relayed on the sockets').to.be.greaterThan(1000);
  });
});
