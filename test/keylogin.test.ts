// Login with a key (--authorized-keys-file): the real ssh, sftp and
// ssh-copy-id through the daemon into the real sshd, with a real Hub that
// the daemon's service token starts servers on.
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { useEnv } from './helpers/fixture.js';
import { REPO_ROOT } from './helpers/proxy.js';
import { createHubUser } from './helpers/hub.js';
import { askpassEnv, keyLoginOptions, run, sshOptions, type RunResult } from './helpers/ssh.js';
import { createUnixUser, listAuthorizedKeys, type UnixUser } from './helpers/unixuser.js';
import { waitFor } from './helpers/wait.js';
import { parseKey } from '../lib/ssh2internals.js';
import { BaseAgent, ssh2Login } from './helpers/ssh2client.js';

describe('key logins (--authorized-keys-file): real ssh, sftp and ssh-copy-id, real sshd and Hub', function () {
  this.timeout(180_000);
  // Certificate logins are on too, as a site may run both: test/trustedcas.test.ts has them alone.
  const sitePath = path.join(os.tmpdir(), `jsp-site-ca-${process.pid}-${crypto.randomBytes(3).toString('hex')}`);
  before(async () => {
    fs.mkdirSync(sitePath, { mode: 0o700 });
    const made = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'site-ca', '-f', path.join(sitePath, 'ca')]);
    expect(made.code, made.stderr).to.equal(0);
    fs.copyFileSync(path.join(sitePath, 'ca.pub'), path.join(sitePath, 'trusted_user_ca_keys'));
  });
  after(() => fs.rmSync(sitePath, { recursive: true, force: true }));
  const env = useEnv({
    proxyArgs: ['--authorized-keys-file', '.ssh/authorized_keys', '--trusted-user-ca-keys', path.join(sitePath, 'trusted_user_ca_keys')],
    serviceToken: true,
  });
  let keys: string;
  const others: UnixUser[] = [];

  /** A new key pair made by ssh-keygen; returns the private key's path. */
  async function newKey(name: string, type: string, bits?: number): Promise<string> {
    const file = path.join(keys, name);
    const made = await run('ssh-keygen', ['-q', '-t', type, ...(bits ? ['-b', String(bits)] : []), '-N', '', '-C', name, '-f', file]);
    expect(made.code, made.stderr).to.equal(0);
    return file;
  }

  const publicLine = (keyFile: string) => fs.readFileSync(`${keyFile}.pub`, 'utf8').trim();

  async function fingerprintOf(keyFile: string): Promise<string> {
    const listed = await run('ssh-keygen', ['-l', '-f', `${keyFile}.pub`]);
    return listed.stdout.toString().split(' ')[1]!;
  }

  function keySsh(keyFile: string, command: string[], login = env.user.name, extra: string[] = []): Promise<RunResult> {
    return run('ssh', [...keyLoginOptions(env.proxy.port, keyFile), ...extra, `${login}@127.0.0.1`, ...command]);
  }

  /** What the daemon logged after the first `before` characters. */
  const logsSince = (before: number) => env.proxy.logs().slice(before);

  before(() => {
    keys = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-userkeys-'));
  });

  after(async function () {
    this.timeout(60_000);
    for (const other of others) await other.remove();
    if (keys) fs.rmSync(keys, { recursive: true, force: true });
  });

  it('says at start that key logins are on, and where keys are read', () => {
    expect(env.proxy.logLine('key logins on')).to.include(".ssh/authorized_keys");
  });

  for (const [type, bits, algorithm] of [
    ['ed25519', undefined, 'ssh-ed25519'],
    ['ecdsa', 256, 'ecdsa-sha2-nistp256'],
    ['rsa', 3072, 'rsa-sha2-512'],
    ['rsa', 3072, 'rsa-sha2-256'],
  ] as const) {
    it(`logs in with a listed ${type} key (${algorithm}), no prompt, into the user's own server; the log names the key`, async () => {
      const keyFile = await newKey(`${algorithm}-${crypto.randomBytes(3).toString('hex')}`, type, bits);
      listAuthorizedKeys(env.user, ['# a comment, then the key', publicLine(keyFile)]);
      const before = env.proxy.logs().length;
      const result = await keySsh(keyFile, ['id -un; pwd; pgrep -u "$(id -u)" -f jupyterhub-singleuser >/dev/null && echo server-running'], env.user.name, [
        '-o',
        `PubkeyAcceptedAlgorithms=${algorithm}`,
      ]);
      expect(result.code, result.stderr).to.equal(0);
      expect(result.stdout.toString().split('\n')).to.deep.equal([env.user.name, env.user.home, 'server-running', '']);
      const accepted = logsSince(before).split('\n').find((line) => line.includes('login accepted'));
      expect(accepted).to.include(`method=publickey key=${type === 'rsa' ? 'ssh-rsa' : algorithm} ${await fingerprintOf(keyFile)}`);
    });
  }

  it('ssh-copy-id with the token installs a key, and the key logs in from then on; sftp -b and scp need no prompt', async () => {
    listAuthorizedKeys(env.user, []);
    const keyFile = await newKey(`copied-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    expect((await keySsh(keyFile, ['true'])).code, 'not listed yet').to.equal(255);

    const options = sshOptions(env.proxy.port).filter((o) => o !== '-p' && o !== String(env.proxy.port));
    // ssh-copy-id keeps its temporary files in the local ~/.ssh.
    const home = fs.mkdtempSync(path.join(keys, 'home-'));
    fs.mkdirSync(path.join(home, '.ssh'), { mode: 0o700 });
    const copied = await run('ssh-copy-id', ['-i', `${keyFile}.pub`, '-p', String(env.proxy.port), ...options, `${env.user.name}@127.0.0.1`], {
      env: askpassEnv(env.token, { HOME: home }),
    });
    expect(copied.code, copied.stderr).to.equal(0);
    const file = path.join(env.user.home, '.ssh', 'authorized_keys');
    expect(fs.readFileSync(file, 'utf8')).to.include(publicLine(keyFile).split(' ')[1]);
    expect(fs.statSync(file).mode & 0o777).to.equal(0o600);

    expect((await keySsh(keyFile, ['echo', 'key-ok'])).stdout.toString()).to.equal('key-ok\n');

    const data = crypto.randomBytes(1024 * 1024);
    const local = path.join(keys, 'upload.bin');
    fs.writeFileSync(local, data);
    const batch = path.join(keys, 'batch');
    fs.writeFileSync(batch, `put ${local} upload.bin\nget upload.bin ${local}.back\n`);
    const copyOptions = keyLoginOptions(env.proxy.port, keyFile);
    copyOptions[copyOptions.indexOf('-p')] = '-P';
    const sftp = await run('sftp', [...copyOptions, '-b', batch, `${env.user.name}@127.0.0.1`]);
    expect(sftp.code, sftp.stderr).to.equal(0);
    expect(fs.readFileSync(`${local}.back`).equals(data), 'sftp put and get').to.equal(true);
    const scp = await run('scp', [...copyOptions, `${env.user.name}@127.0.0.1:upload.bin`, `${local}.scp`]);
    expect(scp.code, scp.stderr).to.equal(0);
    expect(fs.readFileSync(`${local}.scp`).equals(data), 'scp').to.equal(true);
  });

  describe('security keys (ed25519-sk, ecdsa-sk), made and used by the real ssh-keygen and ssh through a security key in software', () => {
    let provider: string;

    before(async function () {
      this.timeout(60_000);
      provider = path.join(keys, 'softkey.so');
      const built = await run('cc', ['-shared', '-fPIC', '-o', provider, path.join(REPO_ROOT, 'test', 'securitykey', 'softkey.c'), '-lcrypto']);
      expect(built.code, built.stderr).to.equal(0);
    });

    async function newSecurityKey(type: 'ed25519-sk' | 'ecdsa-sk'): Promise<string> {
      const file = path.join(keys, `${type}-${crypto.randomBytes(3).toString('hex')}`);
      const made = await run('ssh-keygen', ['-q', '-t', type, '-w', provider, '-N', '', '-C', type, '-f', file]);
      expect(made.code, made.stderr).to.equal(0);
      return file;
    }

    /** ssh with the key; `flags` are what the security key reports: 1 touched, 5 touched and verified the user, 0 neither. */
    function skSsh(keyFile: string, flags: number, command: string[]): Promise<RunResult> {
      return run('ssh', [...keyLoginOptions(env.proxy.port, keyFile), '-o', `SecurityKeyProvider=${provider}`, `${env.user.name}@127.0.0.1`, ...command], {
        env: { ...process.env, SOFTKEY_FLAGS: String(flags) },
      });
    }

    for (const type of ['ed25519-sk', 'ecdsa-sk'] as const) {
      it(`logs in with a listed ${type} key the user touched; the log names the key`, async () => {
        const keyFile = await newSecurityKey(type);
        listAuthorizedKeys(env.user, [publicLine(keyFile)]);
        const before = env.proxy.logs().length;
        const result = await skSsh(keyFile, 1, ['id', '-un']);
        expect(result.code, result.stderr).to.equal(0);
        expect(result.stdout.toString()).to.equal(`${env.user.name}\n`);
        const algorithm = type === 'ed25519-sk' ? 'sk-ssh-ed25519@openssh.com' : 'sk-ecdsa-sha2-nistp256@openssh.com';
        expect(logsSince(before)).to.include(`method=publickey key=${algorithm} ${await fingerprintOf(keyFile)}`);
      });
    }

    it('refuses a signature without the touch unless the line says no-touch-required, and one without user verification when it says verify-required', async () => {
      const keyFile = await newSecurityKey('ed25519-sk');
      listAuthorizedKeys(env.user, [publicLine(keyFile)]);
      let before = env.proxy.logs().length;
      const untouched = await skSsh(keyFile, 0, ['true']);
      expect(untouched.code).to.equal(255);
      expect(logsSince(before)).to.match(/login refused: user=\S+ method=publickey reason=the security key was not touched/);

      listAuthorizedKeys(env.user, [`no-touch-required ${publicLine(keyFile)}`]);
      const allowed = await skSsh(keyFile, 0, ['echo', 'no-touch-ok']);
      expect(allowed.code, allowed.stderr).to.equal(0);
      expect(allowed.stdout.toString()).to.equal('no-touch-ok\n');

      listAuthorizedKeys(env.user, [`verify-required ${publicLine(keyFile)}`]);
      before = env.proxy.logs().length;
      const unverified = await skSsh(keyFile, 1, ['true']);
      expect(unverified.code).to.equal(255);
      expect(logsSince(before)).to.match(/reason=the security key did not verify its user/);
      const verified = await skSsh(keyFile, 5, ['echo', 'verified-ok']);
      expect(verified.code, verified.stderr).to.equal(0);
      expect(verified.stdout.toString()).to.equal('verified-ok\n');
    });
  });

  describe('certificates (a cert-authority line), made by the real ssh-keygen -s and used by the real ssh', () => {
    let ca: string;
    before(async () => {
      ca = await newKey(`ca-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    });

    /** A new key with a certificate signed by the authority (ssh -i then sends the certificate). */
    async function certifiedKey(args: string[]): Promise<string> {
      const keyFile = await newKey(`certified-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
      const signed = await run('ssh-keygen', ['-q', '-s', ca, '-I', 'alice@laptop', '-z', '7', ...args, `${keyFile}.pub`]);
      expect(signed.code, signed.stderr).to.equal(0);
      return keyFile;
    }

    it("logs in with a certificate for the account's name; the log names the certificate, its ID and its authority; the authority's own key does not log in", async () => {
      listAuthorizedKeys(env.user, [`cert-authority ${publicLine(ca)}`]);
      const keyFile = await certifiedKey(['-n', env.user.name, '-V', '-5m:+1h']);
      const before = env.proxy.logs().length;
      const result = await keySsh(keyFile, ['id', '-un']);
      expect(result.code, result.stderr).to.equal(0);
      expect(result.stdout.toString()).to.equal(`${env.user.name}\n`);
      expect(logsSince(before)).to.include(`method=publickey key=ssh-ed25519-cert ${await fingerprintOf(keyFile)} ID "alice@laptop" (serial 7) CA ssh-ed25519 ${await fingerprintOf(ca)}`);
      expect((await keySsh(ca, ['true'])).code, 'the authority key itself').to.equal(255);
    });

    it('refuses a certificate for another principal (unless the line names it in principals=), an expired one, and one from another source-address', async () => {
      listAuthorizedKeys(env.user, [`cert-authority ${publicLine(ca)}`]);
      const other = await certifiedKey(['-n', 'someone-else', '-V', '-5m:+1h']);
      let before = env.proxy.logs().length;
      expect((await keySsh(other, ['true'])).code).to.equal(255);
      expect(logsSince(before)).to.include(`refused: line 1: the certificate is not for ${env.user.name} (its principals)`);
      listAuthorizedKeys(env.user, [`cert-authority,principals="ops,someone-else" ${publicLine(ca)}`]);
      const viaPrincipals = await keySsh(other, ['id', '-un']);
      expect(viaPrincipals.code, viaPrincipals.stderr).to.equal(0);

      listAuthorizedKeys(env.user, [`cert-authority ${publicLine(ca)}`]);
      const expired = await certifiedKey(['-n', env.user.name, '-V', '-2h:-1h']);
      before = env.proxy.logs().length;
      expect((await keySsh(expired, ['true'])).code).to.equal(255);
      expect(logsSince(before)).to.include('refused: line 1: the certificate has expired');
      const elsewhere = await certifiedKey(['-n', env.user.name, '-O', 'source-address=192.0.2.0/24']);
      before = env.proxy.logs().length;
      expect((await keySsh(elsewhere, ['true'])).code).to.equal(255);
      expect(logsSince(before)).to.include('refused: line 1: the certificate is not valid from 127.0.0.1 (source-address)');
    });

    it("with --trusted-user-ca-keys too: the site's certificate for the Hub user logs in beside the account's keys, and one it refuses may still log in through a cert-authority line", async () => {
      const siteCa = path.join(sitePath, 'ca');
      /** A new key with a certificate of the site's authority for `principal`. */
      const siteCertified = async (principal: string) => {
        const keyFile = await newKey(`site-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
        const signed = await run('ssh-keygen', ['-q', '-s', siteCa, '-I', 'site', '-n', principal, `${keyFile}.pub`]);
        expect(signed.code, signed.stderr).to.equal(0);
        return keyFile;
      };
      listAuthorizedKeys(env.user, [`cert-authority ${publicLine(ca)}`]);
      const bySite = await keySsh(await siteCertified(env.user.name), ['id', '-un']);
      expect(bySite.code, bySite.stderr).to.equal(0);

      // The account also lists the site's authority, for another principal: --trusted-user-ca-keys refuses, the line takes it.
      listAuthorizedKeys(env.user, [`cert-authority,principals="backup" ${publicLine(siteCa)}`]);
      const before = env.proxy.logs().length;
      const byLine = await keySsh(await siteCertified('backup'), ['id', '-un']);
      expect(byLine.code, byLine.stderr).to.equal(0);
      expect(logsSince(before)).to.include(`refused by --trusted-user-ca-keys: the certificate is not for ${env.user.name} (its principals)`);
      expect(logsSince(before)).to.include('login accepted');
    });

    it("applies the certificate's force-command and its permissions (no permit-pty: no terminal) through the internal sshd", async () => {
      listAuthorizedKeys(env.user, [`cert-authority ${publicLine(ca)}`]);
      const forced = await certifiedKey(['-n', env.user.name, '-O', 'force-command=echo "forced: $SSH_ORIGINAL_COMMAND"']);
      const result = await keySsh(forced, ['id', '-un']);
      expect(result.code, result.stderr).to.equal(0);
      expect(result.stdout.toString()).to.equal('forced: id -un\n');

      const noPty = await certifiedKey(['-n', env.user.name, '-O', 'clear']);
      // sshd refuses the terminal; ssh -tt, which insists on one, then gives up.
      const tty = await keySsh(noPty, ['tty'], env.user.name, ['-tt']);
      expect(tty.stderr).to.include('PTY allocation request failed on channel 0');
      const withPty = await certifiedKey(['-n', env.user.name, '-O', 'clear', '-O', 'permit-pty']);
      const tty2 = await keySsh(withPty, ['tty'], env.user.name, ['-tt']);
      expect(tty2.code, tty2.stderr).to.equal(0);
      expect(tty2.stdout.toString()).to.match(/^\/dev\/pts\//);
    });
  });

  it('goes on to the token prompt after keys that are not listed, even after more than ten of them', async () => {
    const listed = await newKey(`listed-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    listAuthorizedKeys(env.user, [publicLine(listed)]);
    const unlisted = await newKey(`unlisted-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    const refused = await keySsh(unlisted, ['true']);
    expect(refused.code).to.equal(255);
    expect(refused.stderr).to.include('Permission denied (publickey,keyboard-interactive,password)');

    const many = await Promise.all(Array.from({ length: 12 }, (_, i) => newKey(`many-${i}-${crypto.randomBytes(3).toString('hex')}`, 'ed25519')));
    const options = sshOptions(env.proxy.port);
    options[options.indexOf('PubkeyAuthentication=no')] = 'PubkeyAuthentication=yes';
    const before = env.proxy.logs().length;
    const result = await run(
      'ssh',
      [...options, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', ...many.flatMap((k) => ['-i', k]), `${env.user.name}@127.0.0.1`, 'echo', 'token-ok'],
      { env: askpassEnv(env.token) },
    );
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout.toString()).to.equal('token-ok\n');
    expect(logsSince(before)).to.include('method=keyboard-interactive');
  });

  it('applies restrict and command= through sshd: the forced command runs with SSH_ORIGINAL_COMMAND, no pty, no sftp; the log names the options only', async () => {
    const keyFile = await newKey(`forced-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    listAuthorizedKeys(env.user, [`restrict,command="echo forced-by-key:$SSH_ORIGINAL_COMMAND" ${publicLine(keyFile)}`]);
    const before = env.proxy.logs().length;
    const forced = await keySsh(keyFile, ['whoami']);
    expect(forced.code, forced.stderr).to.equal(0);
    expect(forced.stdout.toString()).to.equal('forced-by-key:whoami\n');
    const accepted = logsSince(before).split('\n').find((line) => line.includes('login accepted'));
    expect(accepted).to.include(`key=ssh-ed25519 ${await fingerprintOf(keyFile)} options=restrict,command`);
    expect(env.proxy.logs()).to.not.include('forced-by-key');

    // sshd refuses the terminal; ssh, told -tt, then gives up (as against sshd directly).
    const tty = await keySsh(keyFile, ['whoami'], env.user.name, ['-tt']);
    expect(tty.code).to.equal(255);
    expect(tty.stderr).to.include('PTY allocation request failed on channel 0');

    const copyOptions = keyLoginOptions(env.proxy.port, keyFile);
    copyOptions[copyOptions.indexOf('-p')] = '-P';
    const batch = path.join(keys, `ls-${crypto.randomBytes(3).toString('hex')}`);
    fs.writeFileSync(batch, 'ls\n');
    const sftp = await run('sftp', [...copyOptions, '-b', batch, `${env.user.name}@127.0.0.1`]);
    expect(sftp.code, 'sftp under a forced command').to.not.equal(0);

    // The same key on a line without options: free again.
    listAuthorizedKeys(env.user, [publicLine(keyFile)]);
    const free = await keySsh(keyFile, ['whoami']);
    expect(free.stdout.toString()).to.equal(`${env.user.name}\n`);
  });

  it('keeps a backup key to what restrict,command="rrsync -ro ~/backup" allows: rsync reads ~/backup, and may not write', async () => {
    const keyFile = await newKey(`rrsync-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    listAuthorizedKeys(env.user, [`restrict,command="rrsync -ro ~/backup" ${publicLine(keyFile)}`]);
    const backup = path.join(env.user.home, 'backup');
    const { uid, gid } = fs.statSync(env.user.home);
    fs.mkdirSync(backup, { recursive: true });
    const data = crypto.randomBytes(256 * 1024);
    fs.writeFileSync(path.join(backup, 'data.bin'), data);
    for (const file of [backup, path.join(backup, 'data.bin')]) fs.chownSync(file, uid, gid);
    const local = fs.mkdtempSync(path.join(keys, 'rsync-'));
    const rsync = (args: string[]) => run('rsync', ['-e', ['ssh', ...keyLoginOptions(env.proxy.port, keyFile)].join(' '), ...args]);

    const pulled = await rsync([`${env.user.name}@127.0.0.1:data.bin`, `${local}/`]);
    expect(pulled.code, pulled.stderr).to.equal(0);
    expect(fs.readFileSync(path.join(local, 'data.bin')).equals(data)).to.equal(true);

    fs.writeFileSync(path.join(local, 'new.bin'), 'x');
    const pushed = await rsync([path.join(local, 'new.bin'), `${env.user.name}@127.0.0.1:`]);
    expect(pushed.code).to.not.equal(0);
    expect(pushed.stderr).to.include('sending to read-only server is not allowed');
    expect(fs.existsSync(path.join(backup, 'new.bin'))).to.equal(false);
  });

  it('applies permitopen= and no-port-forwarding through sshd', async () => {
    // Two local services; the key may reach the first only.
    const servers = await Promise.all(
      ['first', 'second'].map(
        (name) =>
          new Promise<net.Server>((resolve) => {
            const server = net.createServer((socket) => socket.end(`hello from ${name}\n`));
            server.listen(0, '127.0.0.1', () => resolve(server));
          }),
      ),
    );
    try {
      const [first, second] = servers.map((server) => (server.address() as net.AddressInfo).port) as [number, number];
      const keyFile = await newKey(`permitopen-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
      const forward = (port: number) => keySsh(keyFile, [], env.user.name, ['-W', `127.0.0.1:${port}`]);
      listAuthorizedKeys(env.user, [`permitopen="127.0.0.1:${first}" ${publicLine(keyFile)}`]);
      const allowed = await forward(first);
      expect(allowed.stdout.toString(), allowed.stderr).to.equal('hello from first\n');
      const refused = await forward(second);
      expect(refused.code).to.equal(255);
      expect(refused.stderr).to.include('administratively prohibited');

      listAuthorizedKeys(env.user, [`no-port-forwarding ${publicLine(keyFile)}`]);
      const none = await forward(first);
      expect(none.code).to.equal(255);
      expect(none.stderr).to.include('administratively prohibited');
    } finally {
      for (const server of servers) server.close();
    }
  });

  it('keeps the options in a file of the connection, 0400 and the account\'s, and removes it when the session ends', async () => {
    const keyFile = await newKey(`session-file-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    // A mark to find this connection's file among the daemon's (under its --runtime-dir).
    const mark = `JSP_MARK=${crypto.randomBytes(6).toString('hex')}`;
    const options = `no-agent-forwarding,environment="${mark}",no-X11-forwarding`;
    listAuthorizedKeys(env.user, [`${options} ${publicLine(keyFile)}`]);
    const session = keySsh(keyFile, ['echo "mark=$JSP_MARK"; sleep 3']);
    const runtime = env.proxy.runtimeDir;
    const file = await waitFor(
      () => {
        for (const daemonDir of fs.readdirSync(runtime)) {
          const dir = path.join(runtime, daemonDir, 'session-keys');
          if (!fs.existsSync(dir)) continue;
          const found = fs.readdirSync(dir).map((name) => path.join(dir, name)).find((f) => fs.readFileSync(f, 'utf8').includes(mark));
          if (found) return found;
        }
        return undefined;
      },
      { timeoutMs: 20_000, what: "the connection's file" },
    );
    const stat = fs.statSync(file);
    expect(stat.uid).to.equal(fs.statSync(env.user.home).uid);
    expect(stat.mode & 0o777).to.equal(0o400);
    expect(fs.readFileSync(file, 'utf8')).to.match(new RegExp(`^${options} ssh-ed25519 \\S+ jupyter-ssh-proxy\n$`));
    expect(fs.statSync(path.dirname(file)).mode & 0o777).to.equal(0o711);
    const ended = await session;
    expect(ended.code, ended.stderr).to.equal(0);
    // environment= is sshd's to apply, and sshd does so only with PermitUserEnvironment.
    expect(ended.stdout.toString()).to.equal('mark=\n');
    await waitFor(() => !fs.existsSync(file) || undefined, { timeoutMs: 10_000, what: 'the file removed' });
  });

  it('enforces expiry-time= itself, and tells a key holder in one line when sshd refuses the values of its options', async () => {
    const keyFile = await newKey(`expiry-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    listAuthorizedKeys(env.user, [`expiry-time="20200101Z" ${publicLine(keyFile)}`]);
    const before = env.proxy.logs().length;
    const expired = await keySsh(keyFile, ['true']);
    expect(expired.code).to.equal(255);
    expect(expired.stderr).to.include('Permission denied (publickey,keyboard-interactive,password)');
    expect(logsSince(before)).to.match(/key ssh-ed25519 SHA256:\S+ of \S+ refused: line 1 expired at 2020-01-01T00:00:00\.000Z \(expiry-time=\)/);
    listAuthorizedKeys(env.user, [`expiry-time="20200101Z" ${publicLine(keyFile)}`, `expiry-time="20991231" ${publicLine(keyFile)}`]);
    expect((await keySsh(keyFile, ['true'])).code, 'a later line that has not expired').to.equal(0);

    // A permitopen without a port: sshd refuses the line, which the daemon cannot tell beforehand.
    listAuthorizedKeys(env.user, [`permitopen="nowhere" ${publicLine(keyFile)}`]);
    const refused = await keySsh(keyFile, ['true']);
    expect(refused.code).to.equal(255);
    expect(refused.stderr).to.include("refused the options of this key's line in authorized_keys (permitopen); check their values");
    listAuthorizedKeys(env.user, [publicLine(keyFile)]);
    expect((await keySsh(keyFile, ['true'])).code, 'the next login').to.equal(0);
  });

  it('enforces from= itself: the key logs in from the addresses it names, and only from those', async () => {
    const keyFile = await newKey(`from-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    const from = (source: string) => keySsh(keyFile, ['true'], env.user.name, ['-b', source]);
    listAuthorizedKeys(env.user, [`from="127.0.0.2" ${publicLine(keyFile)}`]);
    const before = env.proxy.logs().length;
    expect((await from('127.0.0.1')).code, 'from another address').to.equal(255);
    expect(logsSince(before)).to.match(/key ssh-ed25519 SHA256:\S+ of \S+ refused: line 1 is not allowed from 127\.0\.0\.1 \(from=\)/);
    expect((await from('127.0.0.2')).code, 'from the address it names').to.equal(0);

    listAuthorizedKeys(env.user, [`from="127.0.0.0/8,!127.0.0.2" ${publicLine(keyFile)}`]);
    expect((await from('127.0.0.2')).code, 'an address the list excludes').to.equal(255);
    expect((await from('127.0.0.1')).code, 'in the network').to.equal(0);
  });

  it("refuses what sshd's StrictModes refuses: a file or folder others may write, a link to another account's file", async () => {
    const keyFile = await newKey(`modes-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    const file = listAuthorizedKeys(env.user, [publicLine(keyFile)]);
    const dir = path.dirname(file);
    const refusedWith = async (reason: string) => {
      const before = env.proxy.logs().length;
      const result = await keySsh(keyFile, ['true']);
      expect(result.code, reason).to.equal(255);
      expect(logsSince(before)).to.include(reason);
    };

    fs.chmodSync(file, 0o620);
    await refusedWith(`refused, bad ownership or modes for file ${file}`);
    fs.chmodSync(file, 0o600);
    fs.chmodSync(dir, 0o770);
    await refusedWith(`refused, bad ownership or modes for directory ${dir}`);
    fs.chmodSync(dir, 0o700);
    expect((await keySsh(keyFile, ['true'])).code, 'with the modes put right').to.equal(0);

    // A file of another account, even one that lists the key, reached by a link: refused for its owner
    // if the account may read it, and not read at all if not (it is read as the account, as sshd does).
    const other = await createUnixUser('ko');
    others.push(other);
    const theirs = listAuthorizedKeys(other, [publicLine(keyFile)]);
    fs.chmodSync(other.home, 0o755);
    fs.chmodSync(path.dirname(theirs), 0o755);
    fs.rmSync(file);
    fs.symlinkSync(theirs, file);
    await refusedWith(`${file}: not readable (EACCES)`);
    fs.chmodSync(theirs, 0o644);
    await refusedWith(`refused, bad ownership or modes for file ${theirs}`);
  });

  it('tells a key holder in one line when the Hub has no such user, and serves the next login', async () => {
    const gone = await createUnixUser('kg');
    others.push(gone);
    await createHubUser(env.hub, gone.name);
    const keyFile = await newKey(`gone-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    listAuthorizedKeys(gone, [publicLine(keyFile)]);
    const deleted = await env.hub.api('DELETE', `/users/${encodeURIComponent(gone.name)}`);
    expect(deleted.status).to.equal(204);

    const result = await keySsh(keyFile, ['true'], gone.name);
    expect(result.code).to.equal(255);
    expect(result.stderr).to.include(`JupyterHub has no user '${gone.name}'`);

    const mine = await newKey(`after-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    listAuthorizedKeys(env.user, [publicLine(mine)]);
    expect((await keySsh(mine, ['true'])).code).to.equal(0);
  });

  it('logs in PuTTY (a .ppk key), curl on libssh2 and paramiko (an RSA key) with a key alone', async () => {
    const ed25519 = await newKey(`putty-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    const rsa = await newKey(`paramiko-${crypto.randomBytes(3).toString('hex')}`, 'rsa', 3072);
    listAuthorizedKeys(env.user, [publicLine(ed25519), publicLine(rsa)]);
    const hostKey = async (type: string) =>
      (await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', path.join(env.proxy.keyDir, `ssh_host_${type}_key.pub`)])).stdout.toString().split(' ')[1]!;

    // PuTTY keeps a random seed in its home.
    const home = fs.mkdtempSync(path.join(keys, 'putty-'));
    const converted = await run('puttygen', [ed25519, '-O', 'private', '-o', `${ed25519}.ppk`]);
    expect(converted.code, converted.stderr).to.equal(0);
    const plink = await run(
      'plink',
      ['-batch', '-ssh', '-P', String(env.proxy.port), '-l', env.user.name, '-i', `${ed25519}.ppk`, '-hostkey', await hostKey('ed25519'), '127.0.0.1', 'id -un'],
      { env: { ...process.env, HOME: home } },
    );
    expect(plink.code, plink.stderr).to.equal(0);
    expect(plink.stdout.toString().trim()).to.equal(env.user.name);

    // Debian 12's libssh2 1.10 picks the ECDSA host key; curl wants its SHA-256 in base64.
    const curl = await run('curl', [
      '--silent', '--show-error', '--hostpubsha256', (await hostKey('ecdsa')).replace(/^SHA256:/, ''),
      '--user', `${env.user.name}:`, '--key', ed25519, '--pubkey', `${ed25519}.pub`, `sftp://127.0.0.1:${env.proxy.port}/~/`,
    ]);
    expect(curl.code, curl.stderr).to.equal(0);
    expect(curl.stdout.toString()).to.match(/ \.ssh$/m);

    const script = [
      'import sys, paramiko',
      'c = paramiko.SSHClient()',
      'c.set_missing_host_key_policy(paramiko.AutoAddPolicy())',
      'c.connect("127.0.0.1", port=int(sys.argv[1]), username=sys.argv[2], key_filename=sys.argv[3], look_for_keys=False, allow_agent=False, timeout=20)',
      '_, out, _ = c.exec_command("id -un")',
      'print(out.read().decode().strip())',
    ].join('\n');
    const paramiko = await run('/usr/bin/python3', ['-c', script, String(env.proxy.port), env.user.name, rsa]);
    expect(paramiko.code, paramiko.stderr).to.equal(0);
    expect(paramiko.stdout.toString().trim()).to.equal(env.user.name);
    const logged = env.proxy.logs();
    for (const keyFile of [ed25519, rsa]) expect(logged).to.include(`method=publickey key=${keyFile === rsa ? 'ssh-rsa' : 'ssh-ed25519'} ${await fingerprintOf(keyFile)}`);
  });

  it('takes keys for the first login name of a connection only', async () => {
    const keyFile = await newKey(`first-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    listAuthorizedKeys(env.user, [publicLine(keyFile)]);
    const key = fs.readFileSync(keyFile);
    const attempt = (username: string) => ({ type: 'publickey' as const, username, key });
    expect(await ssh2Login(env.proxy.port, env.user.name, { authHandler: [attempt('jsp-nobody-here'), attempt(env.user.name)] })).to.equal(
      'All configured authentication methods failed',
    );
    expect(await ssh2Login(env.proxy.port, env.user.name, { authHandler: [attempt(env.user.name)] }), 'the same key first').to.equal('logged in');
  });

  it('refuses a signature that does not verify, and logs it', async () => {
    const keyFile = await newKey(`forged-${crypto.randomBytes(3).toString('hex')}`, 'ed25519');
    listAuthorizedKeys(env.user, [publicLine(keyFile)]);
    const publicKey = parseKey(fs.readFileSync(`${keyFile}.pub`));
    if (publicKey instanceof Error) throw publicKey;
    // An agent that holds the listed key but signs with garbage.
    class ForgingAgent extends BaseAgent {
      getIdentities(cb: (err: Error | undefined, keys: unknown[]) => void) {
        cb(undefined, [publicKey]);
      }
      sign(_key: unknown, _data: Buffer, _options: unknown, cb: (err: Error | undefined, signature: Buffer) => void) {
        cb(undefined, crypto.randomBytes(64));
      }
    }
    const before = env.proxy.logs().length;
    const outcome = await ssh2Login(env.proxy.port, env.user.name, { agent: new ForgingAgent() });
    expect(outcome).to.equal('All configured authentication methods failed');
    await waitFor(() => logsSince(before).includes('reason=signature does not verify for ssh-ed25519') || undefined, { timeoutMs: 5000, what: 'the log line' });
  });
});

describe('key logins from a home root may not enter (NFS with root_squash): a daemon without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH', function () {
  this.timeout(180_000);
  // For root, exec takes its capabilities from the bounding set: the daemon, and the sshd it starts, run without the two.
  const env = useEnv({
    proxyArgs: ['--authorized-keys-file', '.ssh/authorized_keys'],
    serviceToken: true,
    proxyOptions: { commandPrefix: ['setpriv', '--bounding-set', '-dac_override,-dac_read_search'] },
  });
  let keys: string;

  before(() => {
    keys = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-userkeys-'));
  });
  after(() => fs.rmSync(keys, { recursive: true, force: true }));

  it("logs in with a key listed in a 0700 home, which the daemon reads as the user, as sshd does", async () => {
    // Bits 1 and 2 of the effective set: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH.
    const status = fs.readFileSync(`/proc/${env.proxy.child.pid}/status`, 'utf8');
    const effective = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(status)![1]}`);
    expect(effective & 0b110n, status).to.equal(0n);

    fs.chmodSync(env.user.home, 0o700);
    const keyFile = path.join(keys, 'id_ed25519');
    expect((await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile])).code).to.equal(0);
    listAuthorizedKeys(env.user, [fs.readFileSync(`${keyFile}.pub`, 'utf8').trim()]);
    const result = await run('ssh', [...keyLoginOptions(env.proxy.port, keyFile), `${env.user.name}@127.0.0.1`, 'id -un; pwd']);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout.toString()).to.equal(`${env.user.name}\n${env.user.home}\n`);
    expect(env.proxy.logs()).to.not.match(/not readable/);
  });
});
