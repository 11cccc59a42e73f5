// lib/securitykeys.ts: security keys' public keys and login signatures,
// made here with node's crypto as a FIDO authenticator makes them.
// test/keylogin.test.ts logs in with the real ssh and ssh-keygen.
import { expect } from 'chai';
import crypto from 'node:crypto';
import { parseAuthorizedKeys } from '../lib/authorizedkeys.js';
import { SecurityKey, type SecurityKeyPolicy } from '../lib/securitykeys.js';
import { mutate } from '../fuzz/mutate.js';
import { Rng } from '../fuzz/rng.js';

function sshString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  const n = Buffer.alloc(4);
  n.writeUInt32BE(b.length);
  return Buffer.concat([n, b]);
}

const sha256 = (data: Buffer | string) => crypto.createHash('sha256').update(data).digest();

/** A security key of `type`, and a function that signs as its authenticator would, with the given flags. */
function makeKey(type: 'ed25519' | 'ecdsa', application = 'ssh:') {
  const { publicKey, privateKey } = type === 'ed25519' ? crypto.generateKeyPairSync('ed25519') : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const blob =
    type === 'ed25519'
      ? Buffer.concat([sshString('sk-ssh-ed25519@openssh.com'), sshString(Buffer.from(jwk.x!, 'base64url')), sshString(application)])
      : Buffer.concat([
          sshString('sk-ecdsa-sha2-nistp256@openssh.com'),
          sshString('nistp256'),
          sshString(Buffer.concat([Buffer.of(4), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')])),
          sshString(application),
        ]);
  /** ssh2's form: the signature proper, then flags and counter. */
  const sign = (data: Buffer, flags: number, counter = 7): Buffer => {
    const flagsAndCounter = Buffer.alloc(5);
    flagsAndCounter[0] = flags;
    flagsAndCounter.writeUInt32BE(counter, 1);
    const signed = Buffer.concat([sha256(application), flagsAndCounter, sha256(data)]);
    if (type === 'ed25519') return Buffer.concat([crypto.sign(null, signed, privateKey), flagsAndCounter]);
    const ieee = crypto.sign('sha256', signed, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    const mpint = (n: Buffer) => sshString(n[0]! & 0x80 ? Buffer.concat([Buffer.of(0), n]) : n);
    return Buffer.concat([mpint(ieee.subarray(0, 32)), mpint(ieee.subarray(32)), flagsAndCounter]);
  };
  return { blob, sign };
}

const TOUCH: SecurityKeyPolicy = { touchRequired: true, verifyRequired: false };

describe('security keys (lib/securitykeys.ts)', () => {
  for (const type of ['ed25519', 'ecdsa'] as const) {
    describe(`${type}-sk`, () => {
      const { blob, sign } = makeKey(type);
      const key = SecurityKey.parse(blob)!;
      const data = crypto.randomBytes(100);

      it('parses the key blob, and gives it back as the client presents it', () => {
        expect(key).to.be.instanceOf(SecurityKey);
        expect(key.type).to.equal(type === 'ed25519' ? 'sk-ssh-ed25519@openssh.com' : 'sk-ecdsa-sha2-nistp256@openssh.com');
        expect(key.getPublicSSH().equals(blob)).to.equal(true);
      });

      it('takes a signature the user touched the key for, and refuses changed data, a changed flag or counter, and another application', () => {
        expect(key.refusal(data, sign(data, 0x01), TOUCH)).to.equal(undefined);
        const other = Buffer.from(data);
        other[0]! ^= 1;
        expect(key.refusal(other, sign(data, 0x01), TOUCH)).to.equal('signature does not verify');
        const flagged = sign(data, 0x01);
        flagged[flagged.length - 5] = 0x05;
        expect(key.refusal(data, flagged, TOUCH)).to.equal('signature does not verify');
        const counted = sign(data, 0x01);
        counted[counted.length - 1]! ^= 1;
        expect(key.refusal(data, counted, TOUCH)).to.equal('signature does not verify');
        const elsewhere = makeKey(type, 'ssh:elsewhere');
        expect(SecurityKey.parse(elsewhere.blob)!.refusal(data, sign(data, 0x01), TOUCH)).to.equal('signature does not verify');
      });

      it('requires the touch unless no-touch-required, and verification with verify-required, as sshd does', () => {
        expect(key.refusal(data, sign(data, 0x00), TOUCH)).to.match(/not touched/);
        expect(key.refusal(data, sign(data, 0x00), { touchRequired: false, verifyRequired: false })).to.equal(undefined);
        expect(key.refusal(data, sign(data, 0x01), { touchRequired: true, verifyRequired: true })).to.match(/did not verify its user/);
        expect(key.refusal(data, sign(data, 0x05), { touchRequired: true, verifyRequired: true })).to.equal(undefined);
      });

      it('never throws on 2,000 mutated signatures and key blobs (fuzz/mutate.ts), and takes no changed signature', () => {
        const good = sign(data, 0x01);
        for (let i = 0; i < 2000; i++) {
          const { out } = mutate(new Rng(20_261_207, i), good, false);
          expect(key.refusal(data, out, TOUCH), `case ${i}`).to.be.a(out.equals(good) ? 'undefined' : 'string');
          const mutatedKey = SecurityKey.parse(mutate(new Rng(20_261_208, i), blob, false).out);
          if (mutatedKey !== undefined) expect(mutatedKey.refusal(data, good, TOUCH), `key case ${i}`).to.be.a('string');
        }
      });

      it('refuses signatures that do not parse, without throwing', () => {
        const good = sign(data, 0x01);
        for (const bad of [Buffer.alloc(0), Buffer.alloc(5), good.subarray(1), Buffer.concat([Buffer.of(0), good]), Buffer.concat([sshString(Buffer.alloc(300, 1)), sshString(Buffer.alloc(32, 1)), Buffer.alloc(5)])]) {
          expect(key.refusal(data, bad, TOUCH)).to.be.oneOf(['the signature does not parse', 'signature does not verify']);
        }
      });
    });
  }

  it('refuses key blobs that do not parse: a short key, another curve, a point off the curve, a field missing or left over', () => {
    const { blob } = makeKey('ecdsa');
    const x = Buffer.alloc(32, 7);
    for (const bad of [
      Buffer.concat([sshString('sk-ssh-ed25519@openssh.com'), sshString(Buffer.alloc(31)), sshString('ssh:')]),
      Buffer.concat([sshString('sk-ssh-ed25519@openssh.com'), sshString(Buffer.alloc(32))]),
      Buffer.concat([sshString('sk-ssh-ed25519@openssh.com'), sshString(Buffer.alloc(32)), sshString('ssh:'), sshString('more')]),
      Buffer.concat([sshString('sk-ecdsa-sha2-nistp256@openssh.com'), sshString('nistp384'), sshString(Buffer.concat([Buffer.of(4), x, x])), sshString('ssh:')]),
      Buffer.concat([sshString('sk-ecdsa-sha2-nistp256@openssh.com'), sshString('nistp256'), sshString(Buffer.concat([Buffer.of(4), x, x])), sshString('ssh:')]),
      blob.subarray(0, blob.length - 1),
    ]) {
      expect(SecurityKey.parse(bad)).to.equal(undefined);
    }
  });

  it("reads a line's touch-required and verify-required for the daemon, not for the session; the last one counts", () => {
    const { blob } = makeKey('ed25519');
    const line = (options: string) => `${options} sk-ssh-ed25519@openssh.com ${blob.toString('base64')} key@yubikey`;
    const { keys, problems } = parseAuthorizedKeys(
      [line('no-touch-required'), line('verify-required,pty'), line('no-touch-required,touch-required'), `sk-ssh-ed25519@openssh.com ${blob.toString('base64')}`].join('\n'),
      'F',
    );
    expect(problems).to.deep.equal([]);
    expect(keys.map((k) => k.securityKeyPolicy)).to.deep.equal([
      { touchRequired: false, verifyRequired: false },
      { touchRequired: true, verifyRequired: true },
      { touchRequired: true, verifyRequired: false },
      { touchRequired: true, verifyRequired: false },
    ]);
    expect(keys.map((k) => k.sessionOptions?.text)).to.deep.equal([undefined, 'pty', undefined, undefined]);
    expect(keys[0]!.key).to.be.instanceOf(SecurityKey);
  });
});
