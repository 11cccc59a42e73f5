// lib/certificates.ts and the certificate parts of lib/authorizedkeys.ts:
// user certificates made by the real ssh-keygen -s, read and checked as
// sshd checks them. test/keylogin.test.ts logs in with them through the
// daemon.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { certificateSessionOptions, parseAuthorizedKeys } from '../lib/authorizedkeys.js';
import { certificateRefusal, certificateSignatureAlgorithm, isCertificate, parseUserCertificate, sourceAddressAllows, type UserCertificate } from '../lib/certificates.js';
import { parsePublicKey, verifySignature } from '../lib/sshsignatures.js';
import { sshString } from '../lib/sshwire.js';
import { mutate } from '../fuzz/mutate.js';
import { Rng } from '../fuzz/rng.js';

describe('user certificates (lib/certificates.ts)', function () {
  this.timeout(30_000);
  let dir: string;
  let counter = 0;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-certs-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** A new key pair by ssh-keygen; returns the private key's path. */
  function newKey(type: string, bits?: number): string {
    const file = path.join(dir, `key-${counter++}`);
    execFileSync('ssh-keygen', ['-q', '-t', type, ...(bits ? ['-b', String(bits)] : []), '-N', '', '-f', file]);
    return file;
  }

  /** `ssh-keygen -s ca` on key's public half with `args`; returns the certificate blob. */
  function certify(ca: string, key: string, args: string[]): Buffer {
    execFileSync('ssh-keygen', ['-q', '-s', ca, '-I', 'alice@laptop', ...args, `${key}.pub`]);
    return Buffer.from(fs.readFileSync(`${key}-cert.pub`, 'utf8').split(' ')[1]!, 'base64');
  }

  const parsed = (blob: Buffer): UserCertificate => {
    const c = parseUserCertificate(blob);
    if (typeof c === 'string') throw new Error(c);
    return c;
  };

  for (const [keyType, caType, caBits] of [
    ['ed25519', 'ed25519', undefined],
    ['ecdsa', 'rsa', 2048],
    ['rsa', 'ecdsa', 384],
  ] as const) {
    it(`reads a ${keyType} certificate signed by a ${caType} authority: key, ID, serial, principals, validity, options`, () => {
      const ca = newKey(caType, caBits);
      const key = newKey(keyType);
      const blob = certify(ca, key, ['-z', '42', '-n', 'alice,bob', '-V', '20300101:20310101', '-O', 'clear', '-O', 'permit-pty', '-O', 'force-command=uptime', '-O', 'source-address=10.0.0.0/8,::1']);
      expect(isCertificate(blob)).to.equal(true);
      const c = parsed(blob);
      const pub = fs.readFileSync(`${key}.pub`, 'utf8').split(' ')[1]!;
      expect(c.key.blob.toString('base64')).to.equal(pub);
      expect(c.authority.blob.toString('base64')).to.equal(fs.readFileSync(`${ca}.pub`, 'utf8').split(' ')[1]);
      expect([c.keyId, c.serial, c.principals]).to.deep.equal(['alice@laptop', 42n, ['alice', 'bob']]);
      // ssh-keygen reads -V in local time.
      expect([c.validAfter, c.validBefore]).to.deep.equal([BigInt(new Date(2030, 0, 1).getTime() / 1000), BigInt(new Date(2031, 0, 1).getTime() / 1000)]);
      expect([c.forceCommand, c.sourceAddress, [...c.permissions]]).to.deep.equal(['uptime', '10.0.0.0/8,::1', ['pty']]);
    });
  }

  it('tells the signature algorithm of a certificate login only for a certificate algorithm of the blob\'s type', () => {
    const ca = newKey('ed25519');
    const rsa = certify(ca, newKey('rsa', 2048), []);
    const ed25519 = certify(ca, newKey('ed25519'), []);
    expect(certificateSignatureAlgorithm('rsa-sha2-512-cert-v01@openssh.com', rsa)).to.equal('rsa-sha2-512');
    expect(certificateSignatureAlgorithm('rsa-sha2-256-cert-v01@openssh.com', rsa)).to.equal('rsa-sha2-256');
    expect(certificateSignatureAlgorithm('ssh-ed25519-cert-v01@openssh.com', ed25519)).to.equal('ssh-ed25519');
    expect(certificateSignatureAlgorithm('ssh-ed25519-cert-v01@openssh.com', rsa)).to.equal(undefined);
    expect(certificateSignatureAlgorithm('ssh-rsa-cert-v01@openssh.com', rsa), 'RSA with SHA-1').to.equal(undefined);
    expect(certificateSignatureAlgorithm('ssh-ed25519', ed25519)).to.equal(undefined);
  });

  it('refuses a certificate whose authority signature does not verify, a host certificate, a cut one, and an unknown critical option', () => {
    const ca = newKey('ed25519');
    const key = newKey('ed25519');
    const blob = certify(ca, key, ['-n', 'alice']);
    const forged = Buffer.from(blob);
    forged[blob.length - 10]! ^= 1;
    expect(parseUserCertificate(forged)).to.equal("its authority's signature does not verify");
    const changed = Buffer.from(blob);
    changed[60]! ^= 1; // inside the certified key
    expect(parseUserCertificate(changed)).to.equal("its authority's signature does not verify");
    expect(parseUserCertificate(blob.subarray(0, blob.length - 1))).to.equal('the certificate does not parse');
    execFileSync('ssh-keygen', ['-q', '-s', ca, '-I', 'host', '-h', '-n', 'example.org', `${key}.pub`]);
    expect(parseUserCertificate(Buffer.from(fs.readFileSync(`${key}-cert.pub`, 'utf8').split(' ')[1]!, 'base64'))).to.equal('not a user certificate');
    expect(parseUserCertificate(certify(ca, key, ['-n', 'alice', '-O', 'critical:made-up@example.org']))).to.equal(
      'it has the critical option made-up@example.org, which the proxy does not know',
    );
    expect(parsed(certify(ca, key, ['-n', 'alice', '-O', 'extension:made-up@example.org'])).permissions.has('pty')).to.equal(true);
  });

  it('checks validity, principals (the account, or the line\'s principals=) and source-address as sshd does', () => {
    const ca = newKey('ed25519');
    const key = newKey('ed25519');
    const now = Date.now();
    const c = parsed(certify(ca, key, ['-n', 'alice,ops', '-V', '-1h:+1h']));
    expect(certificateRefusal(c, 'alice', undefined, '127.0.0.1', now)).to.equal(undefined);
    expect(certificateRefusal(c, 'alice', undefined, '127.0.0.1', now + 2 * 3600_000)).to.equal('the certificate has expired');
    expect(certificateRefusal(c, 'alice', undefined, '127.0.0.1', now - 2 * 3600_000)).to.equal('the certificate is not yet valid');
    expect(certificateRefusal(c, 'carol', undefined, '127.0.0.1', now)).to.equal('the certificate is not for carol (its principals)');
    expect(certificateRefusal(c, 'carol', 'ops,admins', '127.0.0.1', now)).to.equal(undefined);
    expect(certificateRefusal(c, 'alice', 'admins', '127.0.0.1', now)).to.equal('the certificate names none of the principals of its line (principals=)');
    // No principals: any account, as sshd takes it through a cert-authority line without principals=.
    expect(certificateRefusal(parsed(certify(ca, key, [])), 'carol', undefined, '127.0.0.1', now)).to.equal(undefined);
    const limited = parsed(certify(ca, key, ['-n', 'alice', '-O', 'source-address=192.0.2.0/24']));
    expect(certificateRefusal(limited, 'alice', undefined, '192.0.2.7', now)).to.equal(undefined);
    expect(certificateRefusal(limited, 'alice', undefined, '::ffff:192.0.2.7', now)).to.equal(undefined);
    expect(certificateRefusal(limited, 'alice', undefined, '127.0.0.1', now)).to.equal('the certificate is not valid from 127.0.0.1 (source-address)');
  });

  it('reads source-address lists: addresses, IPv4 and IPv6 networks; a list that does not parse allows no one', () => {
    expect(sourceAddressAllows('10.1.2.3', '10.1.2.3')).to.equal(true);
    expect(sourceAddressAllows('10.0.0.0/8,2001:db8::/32', '2001:db8::5')).to.equal(true);
    expect(sourceAddressAllows('10.0.0.0/8', '11.0.0.1')).to.equal(false);
    for (const bad of ['10.0.0.0/33', 'example.org', '10.0.0.0/8/1', '', '10.0.0.*']) expect(sourceAddressAllows(bad, '10.0.0.1'), bad).to.equal(false);
  });

  it('merges session options as sshd does: restrict, then what both the certificate and the line allow; the forced commands must agree', () => {
    const ca = newKey('ed25519');
    const key = newKey('ed25519');
    const caLine = fs.readFileSync(`${ca}.pub`, 'utf8').trim();
    const line = (options: string) => parseAuthorizedKeys(`${options} ${caLine}`, 'F').keys[0]!;
    const all = parsed(certify(ca, key, ['-n', 'alice']));
    const ptyOnly = parsed(certify(ca, key, ['-n', 'alice', '-O', 'clear', '-O', 'permit-pty']));
    const forced = parsed(certify(ca, key, ['-n', 'alice', '-O', 'force-command=echo "hi"']));

    expect(line('cert-authority').certAuthority).to.equal(true);
    expect(certificateSessionOptions(line('cert-authority'), all)).to.deep.equal({
      text: 'restrict,pty,port-forwarding,agent-forwarding,x11-forwarding,user-rc',
      names: ['restrict', 'pty', 'port-forwarding', 'agent-forwarding', 'x11-forwarding', 'user-rc'],
    });
    expect(certificateSessionOptions(line('cert-authority'), ptyOnly)).to.deep.include({ text: 'restrict,pty' });
    expect(certificateSessionOptions(line('cert-authority,no-pty,permitopen="localhost:80"'), all)).to.deep.include({
      text: 'restrict,port-forwarding,agent-forwarding,x11-forwarding,user-rc,permitopen="localhost:80"',
    });
    expect(certificateSessionOptions(line('restrict,cert-authority,port-forwarding'), ptyOnly)).to.deep.include({ text: 'restrict' });
    expect(certificateSessionOptions(line('cert-authority'), forced)).to.deep.include({ text: `restrict,${'pty,port-forwarding,agent-forwarding,x11-forwarding,user-rc'},command="echo \\"hi\\""` });
    expect(certificateSessionOptions(line('cert-authority,command="echo \\"hi\\""'), forced)).to.deep.include({ names: ['restrict', 'pty', 'port-forwarding', 'agent-forwarding', 'x11-forwarding', 'user-rc', 'command'] });
    expect(certificateSessionOptions(line('cert-authority,command="uptime"'), forced)).to.equal("the certificate's force-command and its line's command= differ");
    expect(certificateSessionOptions(line('cert-authority'), parsed(certify(ca, key, ['-n', 'alice', '-O', 'force-command=ends in \\'])))).to.equal(
      'its forced command cannot be passed on to sshd',
    );
  });

  it('verifies signatures in SSH form (string algorithm, string signature), with the algorithm asked for only, and no RSA with SHA-1', () => {
    const data = crypto.randomBytes(64);
    const mpint = (n: Buffer) => sshString(n[0]! & 0x80 ? Buffer.concat([Buffer.of(0), n]) : n);
    for (const [type, options, algorithms] of [
      ['ed25519', {}, { 'ssh-ed25519': null }],
      ['ec', { namedCurve: 'P-384' }, { 'ecdsa-sha2-nistp384': 'sha384' }],
      ['rsa', { modulusLength: 2048 }, { 'rsa-sha2-512': 'sha512', 'rsa-sha2-256': 'sha256' }],
    ] as const) {
      const { publicKey, privateKey } = crypto.generateKeyPairSync(type as 'ed25519', options as object);
      const jwk = publicKey.export({ format: 'jwk' });
      const wire = (b64: string) => Buffer.from(b64, 'base64url');
      const blob =
        type === 'ed25519'
          ? Buffer.concat([sshString('ssh-ed25519'), sshString(wire(jwk.x!))])
          : type === 'ec'
            ? Buffer.concat([sshString('ecdsa-sha2-nistp384'), sshString('nistp384'), sshString(Buffer.concat([Buffer.of(4), wire(jwk.x!), wire(jwk.y!)]))])
            : Buffer.concat([sshString('ssh-rsa'), mpint(wire(jwk.e!)), mpint(wire(jwk.n!))]);
      const key = parsePublicKey(blob)!;
      expect(key, type).to.not.equal(undefined);
      for (const [name, hash] of Object.entries(algorithms)) {
        let proper = crypto.sign(hash, data, type === 'ec' ? { key: privateKey, dsaEncoding: 'ieee-p1363' } : privateKey);
        if (type === 'ec') proper = Buffer.concat([mpint(proper.subarray(0, 48)), mpint(proper.subarray(48))]);
        const signature = Buffer.concat([sshString(name), sshString(proper)]);
        expect(verifySignature(key, data, signature), name).to.equal(true);
        expect(verifySignature(key, data, signature, name), name).to.equal(true);
        expect(verifySignature(key, Buffer.concat([data, Buffer.of(0)]), signature), `${name}, other data`).to.equal(false);
        expect(verifySignature(key, data, Buffer.concat([signature, Buffer.of(0)])), `${name}, a byte after`).to.equal(false);
      }
      if (type === 'rsa') {
        const sha512 = Buffer.concat([sshString('rsa-sha2-512'), sshString(crypto.sign('sha512', data, privateKey))]);
        expect(verifySignature(key, data, sha512, 'rsa-sha2-256'), 'not the algorithm asked for').to.equal(false);
        const sha1 = Buffer.concat([sshString('ssh-rsa'), sshString(crypto.sign('sha1', data, privateKey))]);
        expect(verifySignature(key, data, sha1), 'ssh-rsa (SHA-1)').to.equal(false);
      }
    }
  });

  it('never throws on 3,000 mutated certificates (fuzz/mutate.ts), and takes none of them', () => {
    const ca = newKey('ecdsa');
    const blob = certify(ca, newKey('rsa', 2048), ['-n', 'alice', '-O', 'source-address=10.0.0.0/8', '-O', 'force-command=true']);
    expect(typeof parseUserCertificate(blob)).to.equal('object');
    const reasons = new Set<string>();
    for (let i = 0; i < 3000; i++) {
      const { out } = mutate(new Rng(20_261_207, i), blob, false);
      const result = parseUserCertificate(out);
      // Every byte is signed, and nothing may follow the signature.
      expect(typeof result, `case ${i}: ${out.equals(blob) ? 'unchanged' : 'a changed certificate was taken'}`).to.equal(out.equals(blob) ? 'object' : 'string');
      if (typeof result === 'string') reasons.add(result);
    }
    expect(reasons).to.include("its authority's signature does not verify");
    expect(reasons).to.include('the certificate does not parse');
  });
});
