// lib/hybridkex.ts, the server's half of mlkem768x25519-sha256, against a
// client's half written from the draft here. The whole exchange with the real
// OpenSSH client is in core.test.ts.
import { expect } from 'chai';
import crypto from 'node:crypto';
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { mlkem768x25519ServerReply } from '../lib/hybridkex.js';

const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function clientKeys() {
  const kem = ml_kem768.keygen();
  const x25519 = crypto.generateKeyPairSync('x25519');
  const publicX25519 = x25519.publicKey.export({ format: 'der', type: 'spki' }).subarray(X25519_SPKI_PREFIX.length);
  return { kem, x25519, clientPublic: Buffer.concat([kem.publicKey, publicX25519]) };
}

describe('mlkem768x25519-sha256, the server side (lib/hybridkex.ts)', () => {
  it('gives the client what it needs to derive the same K: SHA-256 of the ML-KEM and X25519 secrets', () => {
    const { kem, x25519, clientPublic } = clientKeys();
    const { serverPublic, sharedSecret } = mlkem768x25519ServerReply(clientPublic);
    expect(serverPublic.length).to.equal(1088 + 32);
    const kemSecret = ml_kem768.decapsulate(serverPublic.subarray(0, 1088), kem.secretKey);
    const serverX25519 = crypto.createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, serverPublic.subarray(1088)]), format: 'der', type: 'spki' });
    const ecdhSecret = crypto.diffieHellman({ privateKey: x25519.privateKey, publicKey: serverX25519 });
    expect(sharedSecret.toString('hex')).to.equal(crypto.createHash('sha256').update(kemSecret).update(ecdhSecret).digest('hex'));
  });

  it('uses fresh keys and randomness for every exchange', () => {
    const { clientPublic } = clientKeys();
    const a = mlkem768x25519ServerReply(clientPublic);
    const b = mlkem768x25519ServerReply(clientPublic);
    expect(a.serverPublic.equals(b.serverPublic)).to.equal(false);
    expect(a.sharedSecret.equals(b.sharedSecret)).to.equal(false);
  });

  it('refuses a key of the wrong size', () => {
    const { clientPublic } = clientKeys();
    expect(() => mlkem768x25519ServerReply(clientPublic.subarray(1))).to.throw("the client's key (ML-KEM-768 and X25519) has 1215 bytes, not 1216");
    expect(() => mlkem768x25519ServerReply(Buffer.concat([clientPublic, Buffer.of(0)]))).to.throw('has 1217 bytes');
  });

  it("refuses an ML-KEM key that fails FIPS 203's modulus check", () => {
    const { clientPublic } = clientKeys();
    // The first 12-bit coefficient, 4095, is not reduced modulo q = 3329.
    clientPublic[0] = 0xff;
    clientPublic[1] |= 0x0f;
    expect(() => mlkem768x25519ServerReply(clientPublic)).to.throw(/modulus/);
  });

  it('refuses an X25519 key that gives an all-zero secret (a point of small order)', () => {
    const { clientPublic } = clientKeys();
    clientPublic.fill(0, 1184);
    expect(() => mlkem768x25519ServerReply(clientPublic)).to.throw("the client's X25519 key gives an all-zero secret");
  });
});
