// --revoked-keys (lib/revokedkeys.ts): key lists and OpenSSH KRLs made by the
// real ssh-keygen -k, each decision checked against ssh-keygen -Q; then the
// real ssh through the daemon into the real sshd and Hub, with keys and
// certificates revoked while the daemon runs.
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useEnv } from './helpers/fixture.js';
import { keyLoginOptions, run, type RunResult } from './helpers/ssh.js';
import { newKey } from './helpers/sshkeys.js';
import { listAuthorizedKeys } from './helpers/unixuser.js';
import { mutate } from '../fuzz/mutate.js';
import { Rng } from '../fuzz/rng.js';
import { parseUserCertificate } from '../lib/certificates.js';
import { RevokedKeys, parseKrl, type OfferedKey } from '../lib/revokedkeys.js';

/** Signs `keyFile`.pub with `ca`; returns the certificate's path. */
async function certify(ca: string, keyFile: string, args: string[]): Promise<string> {
  const signed = await run('ssh-keygen', ['-q', '-s', ca, ...args, `${keyFile}.pub`]);
  expect(signed.code, signed.stderr).to.equal(0);
  return `${keyFile}-cert.pub`;
}

const blobOf = (publicFile: string) => Buffer.from(fs.readFileSync(publicFile, 'utf8').split(' ')[1]!, 'base64');

/** What the daemon checks for a key or certificate file. */
function offered(publicFile: string): OfferedKey {
  const blob = blobOf(publicFile);
  const certificate = parseUserCertificate(blob);
  if (typeof certificate === 'string') return { plain: blob };
  return { plain: certificate.key.blob, certificate: { authority: certificate.authority.blob, serial: certificate.serial, keyId: certificate.keyId } };
}

/** ssh-keygen -Q's verdict per file: true if revoked. */
async function opensshRevoked(krl: string, files: string[]): Promise<boolean[]> {
  const result = await run('ssh-keygen', ['-Q', '-f', krl, ...files]);
  const lines = result.stdout.toString().trim().split('\n');
  expect(lines, result.stderr).to.have.length(files.length);
  return lines.map((line) => {
    expect(line).to.match(/: (REVOKED|ok)$/);
    return line.endsWith('REVOKED');
  });
}

describe('--revoked-keys files (lib/revokedkeys.ts), against ssh-keygen -Q', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-revoked-unit-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('decides as ssh-keygen -Q for a KRL with serial lists, ranges and bitmaps, key IDs, explicit keys, fingerprints and a second authority', async () => {
    const ca = await newKey(dir, 'ca');
    const otherCa = await newKey(dir, 'other-ca', 'ecdsa');
    const userKey = await newKey(dir, 'user');
    const byKey = await newKey(dir, 'by-key');
    const bySha256 = await newKey(dir, 'by-sha256', 'rsa');
    const bySha1 = await newKey(dir, 'by-sha1', 'ecdsa');
    const fp = async (file: string, hash: string) => (await run('ssh-keygen', ['-l', '-E', hash, '-f', file])).stdout.toString().split(' ')[1]!;
    // Dense odd serials become a bitmap, 200-299 a range, 5000 a list entry (ssh-keygen picks the form).
    const odd = Array.from({ length: 30 }, (_, i) => 101 + 2 * i);
    const spec = [...odd.map((s) => `serial: ${s}`), 'serial: 200-299', 'serial: 5000', 'id: stolen-laptop'].join('\n');
    fs.writeFileSync(path.join(dir, 'spec'), `${spec}\n`);
    const krl = path.join(dir, 'krl');
    let made = await run('ssh-keygen', ['-k', '-f', krl, '-s', `${ca}.pub`, path.join(dir, 'spec')]);
    expect(made.code, made.stderr).to.equal(0);
    fs.writeFileSync(path.join(dir, 'spec2'), `key: ${fs.readFileSync(`${byKey}.pub`, 'utf8')}hash: ${await fp(`${bySha256}.pub`, 'sha256')}\nsha1: ${fs.readFileSync(`${bySha1}.pub`, 'utf8')}`);
    // Updated (-u): keys and fingerprints, then the other authority's serial and key ID.
    made = await run('ssh-keygen', ['-k', '-u', '-f', krl, path.join(dir, 'spec2')]);
    expect(made.code, made.stderr).to.equal(0);
    fs.writeFileSync(path.join(dir, 'spec3'), 'serial: 42\nid: shared-id\n');
    made = await run('ssh-keygen', ['-k', '-u', '-f', krl, '-s', `${otherCa}.pub`, path.join(dir, 'spec3')]);
    expect(made.code, made.stderr).to.equal(0);
    // Every form of revocation is in the file, as ssh-keygen wrote it.
    const parsed = parseKrl(fs.readFileSync(krl));
    if (typeof parsed === 'string') expect.fail(parsed);
    const [ofCa, ofOtherCa] = parsed.certificates;
    expect([ofCa!.serials.size, ofCa!.ranges.length, ofCa!.bitmaps.length, ofCa!.keyIds.size], 'list, ranges, bitmaps, IDs').to.satisfy((n: number[]) => n.every((x) => x > 0));
    expect([ofOtherCa!.serials.size + ofOtherCa!.ranges.length + ofOtherCa!.bitmaps.length, ofOtherCa!.keyIds.size]).to.deep.equal([1, 1]);
    expect([parsed.keys.size, parsed.sha256.size, parsed.sha1.size]).to.deep.equal([1, 1, 1]);

    const files: string[] = [];
    const serials = [0, 1, 99, 100, 101, 102, 103, 159, 160, 161, 199, 200, 250, 299, 300, 4999, 5000, 5001, 42];
    for (const serial of serials) {
      const key = await newKey(dir, `s${serial}`);
      files.push(await certify(ca, key, ['-I', `user-${serial}`, '-z', String(serial), '-n', 'alice']));
    }
    const byOtherCa = await newKey(dir, 'other-42');
    files.push(await certify(otherCa, byOtherCa, ['-I', 'x', '-z', '42', '-n', 'alice']));
    const stolen = await newKey(dir, 'stolen');
    files.push(await certify(ca, stolen, ['-I', 'stolen-laptop', '-z', '0', '-n', 'alice']));
    const shared = await newKey(dir, 'shared');
    files.push(await certify(otherCa, shared, ['-I', 'shared-id', '-z', '3', '-n', 'alice']));
    const certifiedByKey = await newKey(dir, 'cert-of-revoked');
    fs.copyFileSync(`${byKey}.pub`, `${certifiedByKey}.pub`);
    files.push(await certify(ca, certifiedByKey, ['-I', 'k', '-z', '1', '-n', 'alice']));
    files.push(`${userKey}.pub`, `${byKey}.pub`, `${bySha256}.pub`, `${bySha1}.pub`, `${ca}.pub`);

    const { revoked, form } = RevokedKeys.open(krl);
    expect(form).to.equal('KRL');
    const ours = files.map((file) => revoked.refusal(offered(file), () => undefined) !== undefined);
    const theirs = await opensshRevoked(krl, files);
    expect(ours.map((r, i) => `${path.basename(files[i]!)} ${r}`)).to.deep.equal(theirs.map((r, i) => `${path.basename(files[i]!)} ${r}`));
    // Not a matrix of only "ok": each kind of revocation is in it.
    expect(theirs.filter(Boolean).length).to.be.within(10, files.length - 8);
    expect(revoked.refusal(offered(files[1]!), () => undefined)).to.equal(undefined);
    expect(revoked.refusal(offered(files[serials.indexOf(250)]!), () => undefined)).to.equal('the certificate is revoked by its serial (250)');
    expect(revoked.refusal(offered(files[serials.length + 1]!), () => undefined)).to.equal('the certificate is revoked by its key ID');
    expect(revoked.refusal(offered(files[serials.length + 3]!), () => undefined)).to.equal('the key is revoked');
  });

  // ssh-keygen -Q reads KRLs only; a text list is what sshd's sshkey_in_file(key, file, strict_type 0, check_ca 1) matches.
  it("revokes a text list's keys, their certificates, and certificates of a listed authority, as sshd does", async () => {
    const ca = await newKey(dir, 'ca');
    const bad = await newKey(dir, 'bad');
    const good = await newKey(dir, 'good');
    const list = path.join(dir, 'revoked');
    fs.writeFileSync(list, `# revoked\n${fs.readFileSync(`${bad}.pub`, 'utf8')}`);
    const badCopy = await newKey(dir, 'bad-copy');
    fs.copyFileSync(`${bad}.pub`, `${badCopy}.pub`);
    const files = [`${bad}.pub`, `${good}.pub`, await certify(ca, badCopy, ['-I', 'b', '-n', 'alice']), await certify(ca, good, ['-I', 'g', '-n', 'alice'])];
    const { revoked, form } = RevokedKeys.open(list);
    expect(form).to.equal('key list');
    const check = () => files.map((file) => revoked.refusal(offered(file), () => undefined) !== undefined);
    expect(check()).to.deep.equal([true, false, true, false]);
    fs.appendFileSync(list, fs.readFileSync(`${ca}.pub`));
    expect(check()).to.deep.equal([true, false, true, true]);
    expect(revoked.refusal(offered(files[3]!), () => undefined)).to.equal("the certificate's authority is revoked");
  });

  it('never throws on 3,000 mutated KRLs (fuzz/mutate.ts): each is read or refused with a reason', async () => {
    const ca = await newKey(dir, 'ca');
    const key = await newKey(dir, 'key');
    fs.writeFileSync(path.join(dir, 'spec'), `serial: 1-9\nserial: 11\nserial: 13\nserial: 15\nid: x\nkey: ${fs.readFileSync(`${key}.pub`, 'utf8')}`);
    const krl = path.join(dir, 'krl');
    const made = await run('ssh-keygen', ['-k', '-f', krl, '-s', `${ca}.pub`, path.join(dir, 'spec')]);
    expect(made.code, made.stderr).to.equal(0);
    const good = fs.readFileSync(krl);
    const outcomes = new Set<string>();
    for (let i = 0; i < 3000; i++) {
      const { out } = mutate(new Rng(20_261_207, i), good, false);
      const result = parseKrl(out);
      outcomes.add(typeof result === 'string' ? 'refused' : 'read');
    }
    expect([...outcomes].sort()).to.deep.equal(['read', 'refused']);
  });

  it('refuses at start, and refuses every key once it becomes so: a missing file, one others may write, a KRL that does not parse or is signed', async () => {
    const file = path.join(dir, 'revoked');
    expect(() => RevokedKeys.open(file)).to.throw(`--revoked-keys: ${file}: not readable (ENOENT)`);
    fs.writeFileSync(file, '', { mode: 0o644 });
    const { revoked } = RevokedKeys.open(file);
    const key = await newKey(dir, 'k');
    const logged: string[] = [];
    expect(revoked.refusal(offered(`${key}.pub`), (m) => logged.push(m))).to.equal(undefined);

    fs.chmodSync(file, 0o646);
    expect(revoked.refusal(offered(`${key}.pub`), (m) => logged.push(m))).to.equal(`--revoked-keys cannot be used (${file}: refused, writable by others than its owner (mode 0646))`);
    expect(logged.pop()).to.equal(`--revoked-keys: ${file} changed, every key refused until it is fixed: ${file}: refused, writable by others than its owner (mode 0646)`);
    fs.chmodSync(file, 0o644);

    const krl = path.join(dir, 'krl');
    const made = await run('ssh-keygen', ['-k', '-f', krl, `${key}.pub`]);
    expect(made.code, made.stderr).to.equal(0);
    const good = fs.readFileSync(krl);
    fs.writeFileSync(file, good.subarray(0, good.length - 3));
    expect(revoked.refusal(offered(`${key}.pub`), (m) => logged.push(m))).to.match(/^--revoked-keys cannot be used \(.*refused, a KRL section does not parse\)$/);
    // A signature section (type 4) at the end, as older ssh-keygen wrote with -s and a private key.
    fs.writeFileSync(file, Buffer.concat([good, Buffer.from([4, 0, 0, 0, 0, 0, 0, 0, 0])]));
    expect(revoked.refusal(offered(`${key}.pub`), (m) => logged.push(m))).to.include('signed KRLs are not supported');
    fs.writeFileSync(file, good);
    expect(revoked.refusal(offered(`${key}.pub`), (m) => logged.push(m))).to.equal('the key is revoked');
    expect(logged.pop()).to.equal(`--revoked-keys: ${file} changed, a KRL`);
  });
});

describe('revoked keys through the daemon (--revoked-keys): real ssh, sshd and Hub', function () {
  this.timeout(180_000);
  const dir = path.join(os.tmpdir(), `jsp-revoked-${process.pid}-${crypto.randomBytes(3).toString('hex')}`);
  const revokedFile = path.join(dir, 'revoked_keys');
  before(() => {
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.writeFileSync(revokedFile, '# nothing revoked yet\n', { mode: 0o644 });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = useEnv({ proxyArgs: ['--authorized-keys-file', '.ssh/authorized_keys', '--revoked-keys', revokedFile], serviceToken: true });

  const keySsh = (keyFile: string, command: string[]): Promise<RunResult> =>
    run('ssh', [...keyLoginOptions(env.proxy.port, keyFile), `${env.user.name}@127.0.0.1`, ...command]);
  const logsSince = (before: number) => env.proxy.logs().slice(before);

  it('says at start which file it reads, and in which form', () => {
    expect(env.proxy.logLine('revoked keys:')).to.include(`${revokedFile}, a key list, refuses what it lists`);
  });

  it('refuses a listed key once it is revoked, and a certificate once its serial is, without a restart; the token still logs in', async () => {
    const key = await newKey(dir, `k-${crypto.randomBytes(3).toString('hex')}`);
    const ca = await newKey(dir, `ca-${crypto.randomBytes(3).toString('hex')}`);
    const certified = await newKey(dir, `c-${crypto.randomBytes(3).toString('hex')}`);
    await certify(ca, certified, ['-I', 'alice@laptop', '-z', '17', '-n', env.user.name]);
    listAuthorizedKeys(env.user, [fs.readFileSync(`${key}.pub`, 'utf8').trim(), `cert-authority ${fs.readFileSync(`${ca}.pub`, 'utf8').trim()}`]);
    expect((await keySsh(key, ['true'])).code, 'before').to.equal(0);
    expect((await keySsh(certified, ['true'])).code, 'the certificate before').to.equal(0);

    fs.appendFileSync(revokedFile, fs.readFileSync(`${key}.pub`));
    let before = env.proxy.logs().length;
    const refused = await keySsh(key, ['true']);
    expect(refused.code).to.equal(255);
    expect(refused.stderr).to.include('Permission denied');
    const fingerprint = (await run('ssh-keygen', ['-l', '-f', `${key}.pub`])).stdout.toString().split(' ')[1]!;
    expect(logsSince(before)).to.include(`--revoked-keys: ${revokedFile} changed, a key list`);
    expect(logsSince(before)).to.include(`reason=the key is revoked (--revoked-keys) for ssh-ed25519 ${fingerprint}`);

    // The same file as a KRL, made by ssh-keygen -k: the key again, and serial 17 of the authority.
    const spec = path.join(dir, 'spec');
    fs.writeFileSync(spec, 'serial: 17\n');
    const krl = path.join(dir, 'krl');
    let made = await run('ssh-keygen', ['-k', '-f', krl, '-s', `${ca}.pub`, spec]);
    expect(made.code, made.stderr).to.equal(0);
    made = await run('ssh-keygen', ['-k', '-u', '-f', krl, `${key}.pub`]);
    expect(made.code, made.stderr).to.equal(0);
    fs.copyFileSync(krl, revokedFile);
    before = env.proxy.logs().length;
    expect((await keySsh(certified, ['true'])).code, 'the certificate revoked').to.equal(255);
    expect(logsSince(before)).to.include(`--revoked-keys: ${revokedFile} changed, a KRL`);
    expect(logsSince(before)).to.match(/reason=the certificate is revoked by its serial \(17\) \(--revoked-keys\) for ssh-ed25519-cert SHA256:\S+ ID "alice@laptop" \(serial 17\)/);
    expect((await keySsh(key, ['true'])).code, 'the key, in the KRL').to.equal(255);

    const token = await env.ssh(['id', '-un']);
    expect(token.code, token.stderr).to.equal(0);
  });

  it('refuses every key while the file cannot be read, and takes them again once it can', async () => {
    const key = await newKey(dir, `k-${crypto.randomBytes(3).toString('hex')}`);
    listAuthorizedKeys(env.user, [fs.readFileSync(`${key}.pub`, 'utf8').trim()]);
    fs.writeFileSync(revokedFile, '');
    expect((await keySsh(key, ['true'])).code, 'an empty list').to.equal(0);
    fs.rmSync(revokedFile);
    const before = env.proxy.logs().length;
    expect((await keySsh(key, ['true'])).code, 'no file').to.equal(255);
    expect(logsSince(before)).to.include(`every key refused until it is fixed: ${revokedFile}: not readable (ENOENT)`);
    fs.writeFileSync(revokedFile, '', { mode: 0o644 });
    expect((await keySsh(key, ['true'])).code, 'back').to.equal(0);
  });
});
