// lib/hybridkex.ts, the server's half of the hybrid key exchanges:
// mlkem768x25519-sha256 against a client's half written from the draft
// (test/helpers/mlkemclient.ts); sntrup761x25519-sha512's encoding and sizes
// (lib/sntrup761.ts). The whole exchanges with the real OpenSSH clients,
// whose decapsulation checks every byte, are in core.test.ts.
import { expect } from 'chai';
import crypto from 'node:crypto';
import { MLKEM768X25519_SHA256, SNTRUP761X25519_SHA512, hybridServerReply } from '../lib/hybridkex.js';
import { SNTRUP761_CIPHERTEXT_BYTES, SNTRUP761_PUBLIC_KEY_BYTES, decode, encode, sntrup761Encapsulate } from '../lib/sntrup761.js';
import { mlkemClient } from './helpers/mlkemclient.js';

describe('mlkem768x25519-sha256, the server side (lib/hybridkex.ts)', () => {
  it('gives the client what it needs to derive the same K: SHA-256 of the ML-KEM and X25519 secrets', () => {
    const client = mlkemClient();
    const { serverPublic, sharedSecret } = hybridServerReply(MLKEM768X25519_SHA256, client.clientPublic);
    expect(serverPublic.length).to.equal(1088 + 32);
    expect(sharedSecret.toString('hex')).to.equal(client.sharedSecret(serverPublic).toString('hex'));
  });

  it('uses fresh keys and randomness for every exchange', () => {
    const { clientPublic } = mlkemClient();
    const a = hybridServerReply(MLKEM768X25519_SHA256, clientPublic);
    const b = hybridServerReply(MLKEM768X25519_SHA256, clientPublic);
    expect(a.serverPublic.equals(b.serverPublic)).to.equal(false);
    expect(a.sharedSecret.equals(b.sharedSecret)).to.equal(false);
  });

  it('refuses a key of the wrong size', () => {
    const { clientPublic } = mlkemClient();
    expect(() => hybridServerReply(MLKEM768X25519_SHA256, clientPublic.subarray(1))).to.throw("the client's key (ML-KEM-768 and X25519) has 1215 bytes, not 1216");
    expect(() => hybridServerReply(MLKEM768X25519_SHA256, Buffer.concat([clientPublic, Buffer.of(0)]))).to.throw('has 1217 bytes');
  });

  it("refuses an ML-KEM key that fails FIPS 203's modulus check", () => {
    const { clientPublic } = mlkemClient();
    // The first 12-bit coefficient, 4095, is not reduced modulo q = 3329.
    clientPublic[0] = 0xff;
    clientPublic[1] |= 0x0f;
    expect(() => hybridServerReply(MLKEM768X25519_SHA256, clientPublic)).to.throw(/modulus/);
  });

  it('refuses an X25519 key that gives an all-zero secret (a point of small order)', () => {
    const { clientPublic } = mlkemClient();
    clientPublic.fill(0, 1184);
    expect(() => hybridServerReply(MLKEM768X25519_SHA256, clientPublic)).to.throw("the client's X25519 key gives an all-zero secret");
  });
});

describe('sntrup761x25519-sha512, the server side (lib/hybridkex.ts, lib/sntrup761.ts)', () => {
  const Q = 4591;
  const P = 761;

  it("encodes as the specification's Encode, which Decode inverts: public keys in 1158 bytes, rounded polynomials in 1007", () => {
    for (const [moduli, bytes] of [
      [new Array<number>(P).fill(Q), SNTRUP761_PUBLIC_KEY_BYTES],
      [new Array<number>(P).fill((Q + 2) / 3), 1007],
    ] as const) {
      for (const values of [moduli.map((m) => m - 1), moduli.map(() => 0), moduli.map((m) => crypto.randomInt(m))]) {
        const encoded = encode(values, moduli);
        expect(encoded.length).to.equal(bytes);
        expect(decode(Uint8Array.from(encoded), moduli)).to.deep.equal(values);
      }
    }
    // Small cases by hand: one modulus is little-endian bytes; a pair is merged below M0·M1.
    expect(encode([0x1234], [0x10000])).to.deep.equal([0x34, 0x12]);
    expect(encode([5, 7], [10, 20])).to.deep.equal([75]);
    expect(decode(Uint8Array.of(75), [10, 20])).to.deep.equal([5, 7]);
  });

  it('encapsulates to any 1158 bytes (every encoding decodes) a fresh secret in a 1039-byte ciphertext, and refuses another size', () => {
    const key = crypto.randomBytes(SNTRUP761_PUBLIC_KEY_BYTES);
    const a = sntrup761Encapsulate(key);
    const b = sntrup761Encapsulate(key);
    expect(a.cipherText.length).to.equal(SNTRUP761_CIPHERTEXT_BYTES);
    expect(a.sharedSecret.length).to.equal(32);
    expect(a.cipherText.equals(b.cipherText)).to.equal(false);
    expect(a.sharedSecret.equals(b.sharedSecret)).to.equal(false);
    expect(() => sntrup761Encapsulate(key.subarray(1))).to.throw('an sntrup761 public key has 1158 bytes, not 1157');
  });

  it('answers with the ciphertext and an X25519 key, K being SHA-512 of the two secrets, and refuses a key of the wrong size', () => {
    const clientPublic = Buffer.concat([crypto.randomBytes(SNTRUP761_PUBLIC_KEY_BYTES), crypto.generateKeyPairSync('x25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(12)]);
    for (const method of [SNTRUP761X25519_SHA512, `${SNTRUP761X25519_SHA512}@openssh.com`]) {
      const { serverPublic, sharedSecret } = hybridServerReply(method, clientPublic);
      expect(serverPublic.length).to.equal(SNTRUP761_CIPHERTEXT_BYTES + 32);
      expect(sharedSecret.length, 'a SHA-512 digest').to.equal(64);
      expect(() => hybridServerReply(method, clientPublic.subarray(1))).to.throw("the client's key (sntrup761 and X25519) has 1189 bytes, not 1190");
    }
  });
});
