// lib/hybridkex.ts, the server's half of mlkem768x25519-sha256, against a
// client's half written from the draft (test/helpers/mlkemclient.ts). The
// whole exchange with the real OpenSSH client is in core.test.ts.
import { expect } from 'chai';
import { mlkem768x25519ServerReply } from '../lib/hybridkex.js';
import { mlkemClient } from './helpers/mlkemclient.js';

describe('mlkem768x25519-sha256, the server side (lib/hybridkex.ts)', () => {
  it('gives the client what it needs to derive the same K: SHA-256 of the ML-KEM and X25519 secrets', () => {
    const client = mlkemClient();
    const { serverPublic, sharedSecret } = mlkem768x25519ServerReply(client.clientPublic);
    expect(serverPublic.length).to.equal(1088 + 32);
    expect(sharedSecret.toString('hex')).to.equal(client.sharedSecret(serverPublic).toString('hex'));
  });

  it('uses fresh keys and randomness for every exchange', () => {
    const { clientPublic } = mlkemClient();
    const a = mlkem768x25519ServerReply(clientPublic);
    const b = mlkem768x25519ServerReply(clientPublic);
    expect(a.serverPublic.equals(b.serverPublic)).to.equal(false);
    expect(a.sharedSecret.equals(b.sharedSecret)).to.equal(false);
  });

  it('refuses a key of the wrong size', () => {
    const { clientPublic } = mlkemClient();
    expect(() => mlkem768x25519ServerReply(clientPublic.subarray(1))).to.throw("the client's key (ML-KEM-768 and X25519) has 1215 bytes, not 1216");
    expect(() => mlkem768x25519ServerReply(Buffer.concat([clientPublic, Buffer.of(0)]))).to.throw('has 1217 bytes');
  });

  it("refuses an ML-KEM key that fails FIPS 203's modulus check", () => {
    const { clientPublic } = mlkemClient();
    // The first 12-bit coefficient, 4095, is not reduced modulo q = 3329.
    clientPublic[0] = 0xff;
    clientPublic[1] |= 0x0f;
    expect(() => mlkem768x25519ServerReply(clientPublic)).to.throw(/modulus/);
  });

  it('refuses an X25519 key that gives an all-zero secret (a point of small order)', () => {
    const { clientPublic } = mlkemClient();
    clientPublic.fill(0, 1184);
    expect(() => mlkem768x25519ServerReply(clientPublic)).to.throw("the client's X25519 key gives an all-zero secret");
  });
});
