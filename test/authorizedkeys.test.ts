// lib/authorizedkeys.ts: the lines sshd would take, and sshd's StrictModes
// rules, on files made here (owned by a made-up uid; the tests run as root,
// and the daemon's code reads the files as that uid, as sshd does).
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { authorizedKeysPath, authorizedKeysPatternProblem, parseAuthorizedKeys, parseExpiryTime, readAuthorizedKeys, type KeyOwner } from '../lib/authorizedkeys.js';
import { run } from './helpers/ssh.js';
import { createUnixUser } from './helpers/unixuser.js';

const OWNER_UID = 4242;
const OTHER_UID = 4343;

/** A public key line made by ssh-keygen. */
function keyLine(dir: string, type: string, comment: string): string {
  const file = path.join(dir, `${type}-${crypto.randomBytes(3).toString('hex')}`);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', comment, '-f', file]);
  return fs.readFileSync(`${file}.pub`, 'utf8').trim();
}

/** An ssh-rsa line for a modulus of `bits` (ssh-keygen makes none under 1024). */
function rsaLine(bits: number): string {
  const { publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: bits });
  const jwk = publicKey.export({ format: 'jwk' });
  const mpint = (b64url: string) => {
    let bytes = Buffer.from(b64url, 'base64url');
    if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.of(0), bytes]);
    return bytes;
  };
  const field = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, 0].map((_, i) => (b.length >> (24 - 8 * i)) & 0xff)), b]);
  const blob = Buffer.concat([field(Buffer.from('ssh-rsa')), field(mpint(jwk.e!)), field(mpint(jwk.n!))]);
  return `ssh-rsa ${blob.toString('base64')} small`;
}

describe('authorized keys (lib/authorizedkeys.ts)', function () {
  this.timeout(30_000);
  let dir: string;
  let ed25519: string;
  let ecdsa: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-authkeys-'));
    // The made-up account reads its files through it.
    fs.chmodSync(dir, 0o755);
    ed25519 = keyLine(dir, 'ed25519', 'alice@laptop');
    ecdsa = keyLine(dir, 'ecdsa', 'alice@desktop');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('the lines', () => {
    it('takes key lines, with or without comments, and skips blanks, comments and CRLF endings', () => {
      const [type, b64] = ed25519.split(' ');
      const { keys, problems } = parseAuthorizedKeys(`# mine\n\n${ed25519}\r\n  ${ecdsa}\n${type} ${b64}\n`, 'F');
      expect(problems).to.deep.equal([]);
      expect(keys.map((k) => k.line)).to.deep.equal([3, 4, 5]);
      expect(keys[0]!.blob.equals(Buffer.from(b64!, 'base64'))).to.equal(true);
      expect(keys[1]!.key.type).to.equal('ecdsa-sha2-nistp256');
    });

    it("reads sshd's options: from= and expiry-time= for the daemon, the others as written for the session", () => {
      const lines = [
        `restrict ${ed25519}`,
        `command="echo a, b c",FROM="10.0.0.0/8" ${ed25519}`,
        `no-pty,environment="A=B" ${ed25519}`,
        `command="echo \\"a, b\\" c",no-X11-forwarding ${ed25519}`,
        `from="10.0.0.0/8,!10.0.0.7" ${ed25519}`,
        `expiry-time="20300101",expiry-time="202901011200Z",permitopen="localhost:8888",permitlisten="8080" ${ed25519}`,
      ];
      const { keys, problems } = parseAuthorizedKeys(lines.join('\n'), 'F');
      expect(problems).to.deep.equal([]);
      expect(keys.map(({ line, from, expiresAt, sessionOptions }) => ({ line, from, expiresAt, sessionOptions }))).to.deep.equal([
        { line: 1, from: undefined, expiresAt: undefined, sessionOptions: { text: 'restrict', names: ['restrict'] } },
        { line: 2, from: '10.0.0.0/8', expiresAt: undefined, sessionOptions: { text: 'command="echo a, b c"', names: ['command'] } },
        { line: 3, from: undefined, expiresAt: undefined, sessionOptions: { text: 'no-pty,environment="A=B"', names: ['no-pty', 'environment'] } },
        { line: 4, from: undefined, expiresAt: undefined, sessionOptions: { text: 'command="echo \\"a, b\\" c",no-X11-forwarding', names: ['command', 'no-x11-forwarding'] } },
        { line: 5, from: '10.0.0.0/8,!10.0.0.7', expiresAt: undefined, sessionOptions: undefined },
        {
          line: 6,
          from: undefined,
          // sshd keeps the earliest.
          expiresAt: Date.UTC(2029, 0, 1, 12, 0),
          sessionOptions: { text: 'permitopen="localhost:8888",permitlisten="8080"', names: ['permitopen', 'permitlisten'] },
        },
      ]);
    });

    it('skips a line sshd would refuse for its options, and names no value', () => {
      const lines = [
        `nopty ${ed25519}`,
        `command=echo-secret ${ed25519}`,
        `command="a-secret",command="b" ${ed25519}`,
        `no-restrict ${ed25519}`,
        `pty, ${ed25519}`,
        `command="a-secret"b ${ed25519}`,
        `expiry-time="2030" ${ed25519}`,
        `expiry-time="20301301" ${ed25519}`,
        `command="a\x01-secret" ${ed25519}`,
        `command="a\0-secret" ${ed25519}`,
        `command="no end quote ${ed25519}`,
        `pty="secret" ${ed25519}`,
      ];
      const { keys, problems } = parseAuthorizedKeys(lines.join('\n'), 'F');
      expect(keys).to.deep.equal([]);
      expect(problems).to.deep.equal([
        'F line 1: skipped, sshd would refuse its options: unknown option nopty',
        'F line 2: skipped, sshd would refuse its options: the value of command is not in double quotes',
        'F line 3: skipped, sshd would refuse its options: more than one command=',
        'F line 4: skipped, sshd would refuse its options: unknown option no-restrict',
        'F line 5: skipped, sshd would refuse its options: they end in a comma',
        'F line 6: skipped, sshd would refuse its options: command="..." is not followed by a comma',
        'F line 7: skipped, sshd would refuse its options: expiry-time is not YYYYMMDD[HHMM[SS]][Z]',
        'F line 8: skipped, sshd would refuse its options: expiry-time is not YYYYMMDD[HHMM[SS]][Z]',
        'F line 9: skipped, its options hold control characters or bytes that are not UTF-8',
        'F line 10: skipped, its options hold control characters or bytes that are not UTF-8',
        'F line 11: skipped, not a public key line',
        'F line 12: skipped, sshd would refuse its options: unknown option pty',
      ]);
      expect(problems.join()).to.not.include('secret');
    });

    it("reads expiry-time as sshd does: local time, or UTC with Z or UTC after it; 31 February carries over", () => {
      expect(parseExpiryTime('20300102')).to.equal(new Date(2030, 0, 2).getTime());
      expect(parseExpiryTime('203001021314')).to.equal(new Date(2030, 0, 2, 13, 14).getTime());
      expect(parseExpiryTime('20300102131415')).to.equal(new Date(2030, 0, 2, 13, 14, 15).getTime());
      expect(parseExpiryTime('20300102z')).to.equal(Date.UTC(2030, 0, 2));
      expect(parseExpiryTime('20300102131415UTC')).to.equal(Date.UTC(2030, 0, 2, 13, 14, 15));
      expect(parseExpiryTime('20300231')).to.equal(new Date(2030, 2, 3).getTime());
      for (const bad of ['2030010', '2030010213', '20300102 ', '20300002', '20300100', '20300102246000', '2030-01-02', '19691231Z', '']) {
        expect(parseExpiryTime(bad), bad).to.equal(undefined);
      }
    });

    it('skips DSA, certificates, RSA under 1024 bits, bad base64, a type that does not match the key, and a security key that does not parse', () => {
      const [, b64] = ed25519.split(' ');
      const text = [
        'ssh-dss AAAAB3NzaC1kc3MAAACBAP= x',
        'sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t x',
        `ssh-ed25519-cert-v01@openssh.com ${b64} x`,
        rsaLine(768),
        'ssh-ed25519 not*base64',
        `ecdsa-sha2-nistp256 ${b64}`,
        rsaLine(1024),
      ].join('\n');
      const { keys, problems } = parseAuthorizedKeys(text, 'F');
      expect(problems).to.deep.equal([
        'F line 1: skipped, DSA keys are not accepted',
        'F line 2: skipped, the sk-ssh-ed25519@openssh.com key does not parse',
        'F line 3: skipped, ssh-ed25519-cert-v01 keys are not supported',
        'F line 4: skipped, RSA keys need at least 1024 bits',
        'F line 5: skipped, the ssh-ed25519 key does not parse',
        'F line 6: skipped, the ecdsa-sha2-nistp256 key does not parse',
      ]);
      expect(keys.map((k) => k.line)).to.deep.equal([7]);
    });

    it('says of a file that is no key list only which lines are not keys, never their text', () => {
      const { keys, problems } = parseAuthorizedKeys('root:$y$j9T$secretsalt$hash:19000:0:99999:7:::\nsecret words here\n', 'F');
      expect(keys).to.deep.equal([]);
      expect(problems).to.deep.equal(['F line 1: skipped, not a public key line', 'F line 2: skipped, not a public key line']);
    });
  });

  describe('where the file is', () => {
    it("expands sshd's %h, %u and %%, and takes a relative path from the home", () => {
      const owner = { name: 'alice', home: '/home/alice' };
      expect(authorizedKeysPath('.ssh/authorized_keys', owner)).to.equal('/home/alice/.ssh/authorized_keys');
      expect(authorizedKeysPath('%h/.ssh/keys', owner)).to.equal('/home/alice/.ssh/keys');
      expect(authorizedKeysPath('/etc/ssh/keys/%u', owner)).to.equal('/etc/ssh/keys/alice');
      expect(authorizedKeysPath('/etc/ssh/100%%/%u', owner)).to.equal('/etc/ssh/100%/alice');
    });

    it('refuses other % tokens and an empty path', () => {
      expect(authorizedKeysPatternProblem('.ssh/authorized_keys')).to.equal(undefined);
      expect(authorizedKeysPatternProblem('/etc/%U')).to.include('not %U');
      expect(authorizedKeysPatternProblem('/etc/keys%')).to.include('not %');
      expect(authorizedKeysPatternProblem(' ')).to.include('needs a path');
    });
  });

  describe("reading the file with StrictModes' rules", () => {
    let home: string;
    let owner: KeyOwner;
    let file: string;

    beforeEach(() => {
      home = fs.mkdtempSync(path.join(dir, 'home-'));
      fs.chownSync(home, OWNER_UID, OWNER_UID);
      fs.chmodSync(home, 0o755);
      fs.mkdirSync(path.join(home, '.ssh'), { mode: 0o700 });
      fs.chownSync(path.join(home, '.ssh'), OWNER_UID, OWNER_UID);
      file = path.join(home, '.ssh', 'authorized_keys');
      fs.writeFileSync(file, `${ed25519}\n`, { mode: 0o600 });
      fs.chownSync(file, OWNER_UID, OWNER_UID);
      owner = { name: 'alice', uid: OWNER_UID, gid: OWNER_UID, home };
    });

    it("reads the owner's file, and one root owns that the owner may read", async () => {
      expect((await readAuthorizedKeys(file, owner)).keys).to.have.length(1);
      fs.chownSync(file, 0, 0);
      fs.chmodSync(file, 0o644);
      expect((await readAuthorizedKeys(file, owner)).keys).to.have.length(1);
    });

    it('reads as the owner, as sshd does: a file only root may read is not read', async () => {
      fs.chownSync(file, 0, 0);
      expect(await readAuthorizedKeys(file, owner)).to.deep.equal({ keys: [], problems: [`${file}: not readable (EACCES)`] });
      fs.chownSync(file, OWNER_UID, OWNER_UID);
      fs.chmodSync(path.join(home, '.ssh'), 0o000);
      expect(await readAuthorizedKeys(file, owner)).to.deep.equal({ keys: [], problems: [`${file}: not readable (EACCES)`] });
    });

    it("switches back: the pool threads' other file calls keep the daemon's identity", async () => {
      const rootOnly = fs.mkdtempSync(path.join(dir, 'root-only-'));
      fs.writeFileSync(path.join(rootOnly, 'secret'), 'x', { mode: 0o600 });
      fs.chmodSync(file, 0o600);
      // Interleaved on libuv's four pool threads: a thread left as the owner would refuse the root-only file.
      const reads = await Promise.all(
        Array.from({ length: 64 }, (_, i) => (i % 2 === 0 ? readAuthorizedKeys(file, owner).then((r) => r.keys.length) : fs.promises.readFile(path.join(rootOnly, 'secret'), 'utf8'))),
      );
      expect(reads).to.deep.equal(Array.from({ length: 64 }, (_, i) => (i % 2 === 0 ? 1 : 'x')));
    });

    it('reads a home that root may not enter (NFS with root_squash): a daemon without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH', async () => {
      fs.chmodSync(home, 0o700);
      const script = `
        import fs from 'node:fs';
        const { readAuthorizedKeys } = await import(${JSON.stringify(new URL('../lib/authorizedkeys.js', import.meta.url).href)});
        let direct = 'read';
        try { fs.readFileSync(process.env.FILE); } catch (err) { direct = err.code; }
        const owner = { name: 'alice', uid: ${OWNER_UID}, gid: ${OWNER_UID}, home: process.env.HOME_DIR };
        const { keys, problems } = await readAuthorizedKeys(process.env.FILE, owner);
        console.log(JSON.stringify({ direct, keys: keys.length, problems }));`;
      // For root, exec takes its capabilities from the bounding set: this node runs without the two.
      const r = await run('setpriv', ['--bounding-set', '-dac_override,-dac_read_search', process.execPath, '--input-type=module', '-e', script], {
        env: { ...process.env, FILE: file, HOME_DIR: home },
      });
      expect(r.code, r.stderr.toString()).to.equal(0);
      // What root without those capabilities meets, as on such a share; read as the owner, the keys are there.
      expect(JSON.parse(r.stdout.toString())).to.deep.equal({ direct: 'EACCES', keys: 1, problems: [] });
    });

    it("reads with the owner's groups: a folder only one of them may enter", async function () {
      const user = await createUnixUser('akgroup');
      const group = `jsp-g-${crypto.randomBytes(3).toString('hex')}`;
      try {
        expect((await run('groupadd', [group])).code).to.equal(0);
        expect((await run('usermod', ['-aG', group, user.name])).code).to.equal(0);
        const { uid, gid } = fs.statSync(user.home);
        const shared = path.join(user.home, 'shared');
        fs.mkdirSync(shared, { mode: 0o710 });
        fs.chownSync(shared, 0, Number((await run('getent', ['group', group])).stdout.toString().split(':')[2]));
        fs.chmodSync(shared, 0o710);
        const keys = path.join(shared, 'authorized_keys');
        fs.writeFileSync(keys, `${ed25519}\n`, { mode: 0o600 });
        fs.chownSync(keys, uid, gid);
        const account = { name: user.name, uid, gid, home: user.home };
        expect(await readAuthorizedKeys(keys, account)).to.deep.include({ problems: [] });
        expect((await readAuthorizedKeys(keys, account)).keys).to.have.length(1);
        // Without the group (its primary one only, as for an unknown name), the folder is closed to it.
        expect((await readAuthorizedKeys(keys, { ...account, name: 'jsp-no-such-account' })).problems).to.deep.equal([`${keys}: not readable (EACCES)`]);
      } finally {
        await user.remove();
        await run('groupdel', [group]);
      }
    });

    it('gives no keys and no problem when there is no file', async () => {
      fs.rmSync(file);
      expect(await readAuthorizedKeys(file, owner)).to.deep.equal({ keys: [], problems: [] });
    });

    it('refuses a file another account owns, or that group or others may write', async () => {
      for (const [uid, mode] of [[OTHER_UID, 0o644], [OWNER_UID, 0o620], [OWNER_UID, 0o602]] as const) {
        fs.chownSync(file, uid, uid);
        fs.chmodSync(file, mode);
        const { keys, problems } = await readAuthorizedKeys(file, owner);
        expect(keys, `uid ${uid} mode ${mode.toString(8)}`).to.deep.equal([]);
        expect(problems).to.deep.equal([
          `${file}: refused, bad ownership or modes for file ${file} (it must belong to alice or root and be writable by no one else)`,
        ]);
      }
    });

    it('refuses a folder up to the home that another account owns or others may write, and looks no higher than the home', async () => {
      fs.chmodSync(path.join(home, '.ssh'), 0o777);
      expect((await readAuthorizedKeys(file, owner)).problems[0]).to.include(`bad ownership or modes for directory ${path.join(home, '.ssh')}`);
      fs.chmodSync(path.join(home, '.ssh'), 0o700);
      fs.chmodSync(home, 0o775);
      expect((await readAuthorizedKeys(file, owner)).problems[0]).to.include(`bad ownership or modes for directory ${home}`);
      fs.chmodSync(home, 0o755);
      // Above the home: the test's temp folder sits in /tmp (1777), which sshd does not check either.
      expect((await readAuthorizedKeys(file, owner)).keys).to.have.length(1);
    });

    it('follows a link to where it leads and checks the file there', async () => {
      const elsewhere = path.join(dir, `elsewhere-${crypto.randomBytes(3).toString('hex')}`);
      fs.writeFileSync(elsewhere, `${ed25519}\n`, { mode: 0o644 });
      fs.chownSync(elsewhere, OTHER_UID, OTHER_UID);
      fs.rmSync(file);
      fs.symlinkSync(elsewhere, file);
      expect((await readAuthorizedKeys(file, owner)).problems[0]).to.include(`bad ownership or modes for file ${elsewhere}`);
    });

    it('refuses what is not a regular file without blocking (a FIFO), and a file over 1 MiB', async () => {
      fs.rmSync(file);
      execFileSync('mkfifo', ['-m', '600', file]);
      fs.chownSync(file, OWNER_UID, OWNER_UID);
      expect((await readAuthorizedKeys(file, owner)).problems).to.deep.equal([`${file}: not a regular file`]);
      fs.rmSync(file);
      fs.writeFileSync(file, `${ed25519}\n${'#'.repeat(1024 * 1024)}\n`, { mode: 0o600 });
      fs.chownSync(file, OWNER_UID, OWNER_UID);
      expect((await readAuthorizedKeys(file, owner)).problems[0]).to.include('refused, larger than 1048576 bytes');
    });
  });
});
