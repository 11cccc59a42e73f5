// The client leg's algorithm lists in sshd_config's syntax (lib/algorithms.ts).
import { expect } from 'chai';
import { CIPHERS, KEX, resolveAlgorithmList } from '../lib/algorithms.js';
import { parseKexInitCiphers } from '../lib/messages.js';

describe('algorithms: resolving sshd_config lists', function () {
  it('replaces the defaults with a plain list, in its order', function () {
    expect(resolveAlgorithmList('aes256-gcm@openssh.com,aes128-gcm@openssh.com', CIPHERS, '--ciphers')).to.deep.equal([
      'aes256-gcm@openssh.com',
      'aes128-gcm@openssh.com',
    ]);
  });

  it('removes names and wildcard matches from the defaults with -', function () {
    expect(resolveAlgorithmList('-chacha20-poly1305@openssh.com', CIPHERS, '--ciphers')).to.deep.equal(
      CIPHERS.filter((c) => c !== 'chacha20-poly1305@openssh.com'),
    );
    expect(resolveAlgorithmList('-ecdh-sha2-*,diffie-hellman-group1?-sha512', KEX, '--kex-algorithms')).to.deep.equal([
      'curve25519-sha256',
      'curve25519-sha256@libssh.org',
      'diffie-hellman-group14-sha256',
    ]);
  });

  it('puts names first with ^ and keeps the rest in order', function () {
    expect(resolveAlgorithmList('^aes*-ctr', CIPHERS, '--ciphers')).to.deep.equal([
      'aes128-ctr',
      'aes192-ctr',
      'aes256-ctr',
      'aes128-gcm@openssh.com',
      'aes256-gcm@openssh.com',
      'chacha20-poly1305@openssh.com',
    ]);
  });

  it('keeps the defaults with + of names they hold, and expands wildcards of a plain list once each', function () {
    expect(resolveAlgorithmList('+aes128-ctr', CIPHERS, '--ciphers')).to.deep.equal(CIPHERS);
    expect(resolveAlgorithmList('aes128-ctr,aes*-ctr', CIPHERS, '--ciphers')).to.deep.equal(['aes128-ctr', 'aes192-ctr', 'aes256-ctr']);
  });

  it('does not read a dot or other regular expression characters as patterns', function () {
    expect(() => resolveAlgorithmList('aes128-gcm@openssh.co.', CIPHERS, '--ciphers')).to.throw(/not supported/);
  });

  const refused: [string, RegExp][] = [
    ['aes128-cbc', /^--ciphers: aes128-cbc is not supported; choose from aes128-gcm@openssh.com,.*aes256-ctr$/],
    ['+3des-cbc', /^--ciphers: 3des-cbc is not supported/],
    ['-arcfour*', /^--ciphers: arcfour\* is not supported/],
    ['-aes*,chacha*', /^--ciphers "-aes\*,chacha\*" leaves nothing to offer$/],
    ['aes128-ctr,,aes256-ctr', /^--ciphers must be a comma-separated list of names/],
    ['-', /^--ciphers must be a comma-separated list of names/],
  ];
  for (const [spec, reason] of refused) {
    it(`refuses ${spec} with a one-line reason`, function () {
      expect(() => resolveAlgorithmList(spec, CIPHERS, '--ciphers')).to.throw(reason);
    });
  }
});

describe('algorithms: the cipher lists of a KEXINIT (parseKexInitCiphers)', function () {
  const nameList = (names: string) => {
    const b = Buffer.alloc(4 + names.length);
    b.writeUInt32BE(names.length);
    b.write(names, 4, 'latin1');
    return b;
  };
  const kexinit = Buffer.concat([Buffer.from([20]), Buffer.alloc(16), ...['curve25519-sha256', 'ssh-ed25519', 'aes128-ctr,aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'hmac-sha2-256'].map(nameList)]);

  it('reads both directions', function () {
    expect(parseKexInitCiphers(kexinit)).to.deep.equal({ cs: ['aes128-ctr', 'aes128-gcm@openssh.com'], sc: ['chacha20-poly1305@openssh.com'] });
  });

  it('gives undefined for a payload cut short or a length past its end', function () {
    const cutAt = 17 + 4 + 17 + 4 + 11 + 4 + 10;
    expect(parseKexInitCiphers(kexinit.subarray(0, cutAt))).to.equal(undefined);
    const lying = Buffer.from(kexinit);
    lying.writeUInt32BE(0xffffff, 17);
    expect(parseKexInitCiphers(lying)).to.equal(undefined);
  });
});
