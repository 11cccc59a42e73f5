// Runs last (mocha sorts spec files): no token, password or private key may
// appear in any log line of any daemon the whole suite started. It also makes
// material of its own, so that it cannot pass vacuously when run alone.
import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { useEnv } from './helpers/fixture.js';
import { issuedTokens } from './helpers/hub.js';
import { allProxyLogs } from './helpers/proxy.js';
import { ssh } from './helpers/ssh.js';

describe('secrets never reach the logs (whole suite)', function () {
  const env = useEnv();
  const wrongTokens = ['wrong-token-7f3a9c2e1b', 'another-wrong-token-55d1'];

  before(async function () {
    // A successful login, refused tokens by both methods, all at debug level.
    expect((await env.ssh(['true'], ['-o', 'LogLevel=ERROR'])).code).to.equal(0);
    for (const token of wrongTokens) {
      await ssh(env.proxy.port, env.user.name, token, ['true'], ['-o', 'NumberOfPasswordPrompts=2']);
    }
  });

  it('finds no token in any daemon log line', function () {
    const logs = allProxyLogs.join('');
    expect(logs.length).to.be.greaterThan(1000);
    expect(issuedTokens.length).to.be.greaterThan(0);
    for (const token of [...issuedTokens, ...wrongTokens]) {
      expect(logs.includes(token), 'a token in the logs').to.equal(false);
      // Nor a recognizable half of one.
      expect(logs.includes(token.slice(0, Math.ceil(token.length / 2))), 'half a token in the logs').to.equal(false);
    }
  });

  it('finds no private key material in any daemon log line', function () {
    const logs = allProxyLogs.join('');
    expect(logs).to.not.match(/PRIVATE KEY/);
    const keyFile = path.join(env.proxy.keyDir, 'ssh_host_ed25519_key');
    const body = fs.readFileSync(keyFile, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----'));
    for (const line of body) expect(logs.includes(line), 'a private key line in the logs').to.equal(false);
  });
});
