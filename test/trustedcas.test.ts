// Certificate logins through --trusted-user-ca-keys (lib/trustedcas.ts):
// certificates made by the real ssh-keygen -s, used by the real ssh through
// the daemon into the real sshd, with a real Hub that the daemon's service
// token starts servers on. The user has no authorized_keys at all.
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useEnv } from './helpers/fixture.js';
import { BIN } from './helpers/proxy.js';
import { keyLoginOptions, run, type RunResult } from './helpers/ssh.js';
import { newKey, publicLine } from './helpers/sshkeys.js';
import { sshString } from '../lib/sshwire.js';
import { TrustedUserCAs } from '../lib/trustedcas.js';

async function fingerprintOf(keyFile: string): Promise<string> {
  return (await run('ssh-keygen', ['-l', '-f', `${keyFile}.pub`])).stdout.toString().split(' ')[1]!;
}

describe('certificate logins (--trusted-user-ca-keys): real ssh-keygen -s, ssh, sshd and Hub', function () {
  this.timeout(180_000);
  // Named now, made in the first hook: the daemon is started with it by useEnv's.
  const dir = path.join(os.tmpdir(), `jsp-trustedcas-${process.pid}-${crypto.randomBytes(3).toString('hex')}`);
  const caFile = path.join(dir, 'trusted_user_ca_keys');
  let ca: string;
  before(async () => {
    fs.mkdirSync(dir, { mode: 0o700 });
    ca = await newKey(dir, 'ca');
    fs.writeFileSync(caFile, `# the site's authority\n${publicLine(ca)}\n`, { mode: 0o644 });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = useEnv({ proxyArgs: ['--trusted-user-ca-keys', caFile], serviceToken: true });

  /** A new key with a certificate that `authority` signed for `args` (ssh -i then sends the certificate). */
  async function certifiedKey(args: string[], authority = ca): Promise<string> {
    const keyFile = await newKey(dir, `certified-${crypto.randomBytes(3).toString('hex')}`);
    const signed = await run('ssh-keygen', ['-q', '-s', authority, '-I', 'alice@sso', '-z', '42', ...args, `${keyFile}.pub`]);
    expect(signed.code, signed.stderr).to.equal(0);
    return keyFile;
  }

  const keySsh = (keyFile: string, command: string[], extra: string[] = []): Promise<RunResult> =>
    run('ssh', [...keyLoginOptions(env.proxy.port, keyFile), ...extra, `${env.user.name}@127.0.0.1`, ...command]);

  /** What the daemon logged after the first `before` characters. */
  const logsSince = (before: number) => env.proxy.logs().slice(before);

  it('says at start how many authorities it trusts, and from which file', () => {
    expect(env.proxy.logLine('certificate logins on')).to.include(`user certificates of the 1 authorities in ${caFile}, for the Hub users their principals name`);
  });

  it('logs in with a certificate naming the Hub user, into their own server, without any authorized_keys; the log names certificate and authority', async () => {
    expect(fs.existsSync(path.join(env.user.home, '.ssh', 'authorized_keys'))).to.equal(false);
    const keyFile = await certifiedKey(['-n', `ops,${env.user.name}`, '-V', '-5m:+1h']);
    const before = env.proxy.logs().length;
    const result = await keySsh(keyFile, ['id -un; echo $HOME']);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout.toString()).to.equal(`${env.user.name}\n${env.user.home}\n`);
    const accepted = logsSince(before).split('\n').find((line) => line.includes('login accepted'));
    expect(accepted).to.include(`owner=${env.user.name} method=publickey key=ssh-ed25519-cert ${await fingerprintOf(keyFile)} ID "alice@sso" (serial 42) CA ssh-ed25519 ${await fingerprintOf(ca)}`);
    // The authority's own key is no login key.
    expect((await keySsh(ca, ['true'])).code).to.equal(255);
  });

  it('refuses a certificate for someone else, one without principals, an expired one and one from another source-address, each with its reason in the log', async () => {
    const cases: [string[], string][] = [
      [['-n', 'someone-else'], `refused by --trusted-user-ca-keys: the certificate is not for ${env.user.name} (its principals)`],
      [[], 'refused by --trusted-user-ca-keys: the certificate names no principals'],
      [['-n', env.user.name, '-V', '-2h:-1h'], 'refused by --trusted-user-ca-keys: the certificate has expired'],
      [['-n', env.user.name, '-V', '+1h:+2h'], 'refused by --trusted-user-ca-keys: the certificate is not yet valid'],
      [['-n', env.user.name, '-O', 'source-address=192.0.2.0/24'], 'refused by --trusted-user-ca-keys: the certificate is not valid from 127.0.0.1 (source-address)'],
    ];
    for (const [args, reason] of cases) {
      const keyFile = await certifiedKey(args);
      const before = env.proxy.logs().length;
      const result = await keySsh(keyFile, ['true']);
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).to.equal(255);
      expect(result.stderr).to.include('Permission denied');
      expect(logsSince(before), args.join(' ')).to.include(reason);
    }
  });

  it("applies the certificate's force-command and its permit-* extensions through the internal sshd", async () => {
    const forced = await certifiedKey(['-n', env.user.name, '-O', 'force-command=echo "forced: $SSH_ORIGINAL_COMMAND"']);
    const result = await keySsh(forced, ['id', '-un']);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout.toString()).to.equal('forced: id -un\n');

    const noPty = await certifiedKey(['-n', env.user.name, '-O', 'clear']);
    expect((await keySsh(noPty, ['tty'], ['-tt'])).stderr).to.include('PTY allocation request failed on channel 0');
    const withPty = await certifiedKey(['-n', env.user.name, '-O', 'clear', '-O', 'permit-pty']);
    const tty = await keySsh(withPty, ['tty'], ['-tt']);
    expect(tty.code, tty.stderr).to.equal(0);
    expect(tty.stdout.toString()).to.match(/^\/dev\/pts\//);
  });

  it('reads the file again when it changes: an authority added logs in at once, one removed no longer does, a file made writable by others trusts no one', async () => {
    const other = await newKey(dir, `other-ca-${crypto.randomBytes(3).toString('hex')}`, 'ecdsa');
    const keyFile = await certifiedKey(['-n', env.user.name], other);
    let before = env.proxy.logs().length;
    expect((await keySsh(keyFile, ['true'])).code).to.equal(255);
    expect(logsSince(before)).to.include('refused: its authority is not in --trusted-user-ca-keys');

    const original = fs.readFileSync(caFile, 'utf8');
    fs.writeFileSync(caFile, `${original}${publicLine(other)}\n`);
    before = env.proxy.logs().length;
    const added = await keySsh(keyFile, ['id', '-un']);
    expect(added.code, added.stderr).to.equal(0);
    expect(logsSince(before)).to.include(`--trusted-user-ca-keys: ${caFile} changed, 2 authorities`);

    fs.writeFileSync(caFile, `${publicLine(other)}\n`);
    const ours = await certifiedKey(['-n', env.user.name]);
    expect((await keySsh(ours, ['true'])).code, 'the removed authority').to.equal(255);
    expect((await keySsh(keyFile, ['true'])).code, 'the one still listed').to.equal(0);

    fs.chmodSync(caFile, 0o666);
    before = env.proxy.logs().length;
    expect((await keySsh(keyFile, ['true'])).code, 'a file others may write').to.equal(255);
    expect(logsSince(before)).to.include('refused, writable by others than its owner (mode 0666)');
    fs.writeFileSync(caFile, original);
    fs.chmodSync(caFile, 0o644);
    expect((await keySsh(ours, ['true'])).code, 'the file fixed').to.equal(0);
  });

  it('still takes tokens: a user without a certificate gets the token prompt', async () => {
    const result = await env.ssh(['id', '-un']);
    expect(result.code, result.stderr).to.equal(0);
    expect(result.stdout.toString()).to.equal(`${env.user.name}\n`);
  });
});

describe('--trusted-user-ca-keys files (lib/trustedcas.ts)', function () {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-trustedcas-unit-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('skips lines with options, security keys and lines that are no keys, by line number only, and finds the listed keys', async () => {
    const ca = await newKey(dir, 'ca');
    const rsa = await newKey(dir, 'rsa', 'rsa');
    const file = path.join(dir, 'cas');
    const secret = 'not-a-key-but-a-secret';
    fs.writeFileSync(
      file,
      [
        '# comment',
        '',
        publicLine(ca),
        `cert-authority ${publicLine(rsa)}`,
        `sk-ssh-ed25519@openssh.com ${Buffer.concat([sshString('sk-ssh-ed25519@openssh.com'), sshString(crypto.randomBytes(32)), sshString('ssh:')]).toString('base64')} sk`,
        secret,
      ].join('\n'),
      { mode: 0o600 },
    );
    const { cas, problems } = TrustedUserCAs.open(file);
    expect(cas.size).to.equal(1);
    expect(problems).to.have.members([
      `${file} line 4: skipped, options are not taken here`,
      `${file} line 5: skipped, security keys are not supported as certificate authorities`,
      `${file} line 6: skipped, not a public key line`,
    ]);
    expect(problems.join()).to.not.include(secret);
    const blob = Buffer.from(publicLine(ca).split(' ')[1]!, 'base64');
    const logged: string[] = [];
    expect(cas.find(blob, (m) => logged.push(m))?.line).to.equal(3);
    expect(cas.find(Buffer.from(publicLine(rsa).split(' ')[1]!, 'base64'), (m) => logged.push(m))).to.equal(undefined);
    expect(logged, 'the file did not change').to.deep.equal([]);
  });

  it('refuses at start a file that is missing, empty of keys, writable by others, or a folder', () => {
    const file = path.join(dir, 'cas');
    expect(() => TrustedUserCAs.open(file)).to.throw(`--trusted-user-ca-keys: ${file}: not readable (ENOENT)`);
    fs.writeFileSync(file, '# nothing yet\n', { mode: 0o644 });
    expect(() => TrustedUserCAs.open(file)).to.throw(`--trusted-user-ca-keys: ${file} lists no key`);
    fs.chmodSync(file, 0o664);
    expect(() => TrustedUserCAs.open(file)).to.throw(`--trusted-user-ca-keys: ${file}: refused, writable by others than its owner (mode 0664)`);
    expect(() => TrustedUserCAs.open(dir)).to.throw(`--trusted-user-ca-keys: ${dir}: not a regular file`);
  });

  it('stops the daemon at start with one line, and is refused without a service token', async () => {
    const file = path.join(dir, 'cas');
    const started = await run(process.execPath, [BIN, '-k', dir, '--runtime-dir', path.join(dir, 'run'), '--trusted-user-ca-keys', file, 'http://127.0.0.1:9'], {
      env: { ...process.env, JUPYTERHUB_API_TOKEN: 'unused' },
    });
    expect(started.code).to.equal(1);
    expect(started.stdout.toString()).to.match(new RegExp(`error: cannot start: --trusted-user-ca-keys: ${file}: not readable \\(ENOENT\\)`));
    expect(started.stdout.toString(), 'one line, no stack').to.not.match(/^\s+at /m);
    const env = { ...process.env };
    delete env.JUPYTERHUB_API_TOKEN;
    const noToken = await run(process.execPath, [BIN, '-k', dir, '--trusted-user-ca-keys', file, 'http://127.0.0.1:9'], { env });
    expect(noToken.code).to.equal(1);
    expect(noToken.stderr).to.include('--trusted-user-ca-keys needs a JupyterHub service token in JUPYTERHUB_API_TOKEN');
  });
});
