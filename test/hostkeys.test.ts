// KEYDIR handling: generation, permissions, refusal of bad keys (module and CLI).
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HostKeyError, loadHostKeys } from '../lib/hostkeys.js';
import { BIN } from './helpers/proxy.js';
import { run } from './helpers/ssh.js';

describe('host keys (KEYDIR)', function () {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-hostkeys-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('generates the missing keys under sshd file names, 0600, in OpenSSH format, once', function () {
    const first = loadHostKeys(path.join(dir, 'new'));
    expect(first.generated.map((f) => path.basename(f))).to.deep.equal([
      'ssh_host_ed25519_key',
      'ssh_host_ecdsa_key',
      'ssh_host_rsa_key',
    ]);
    expect(first.keys.map((k) => k.key.type)).to.deep.equal(['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ssh-rsa']);
    for (const file of first.generated) {
      expect(fs.statSync(file).mode & 0o777).to.equal(0o600);
      expect(fs.readFileSync(file, 'utf8')).to.match(/^-{5}BEGIN OPENSSH PRIVATE KEY-{5}/);
    }
    expect(fs.statSync(path.join(dir, 'new')).mode & 0o777).to.equal(0o700);
    const second = loadHostKeys(path.join(dir, 'new'));
    expect(second.generated).to.deep.equal([]);
    expect(second.keys[0]!.key.getPublicSSH().equals(first.keys[0]!.key.getPublicSSH())).to.equal(true);
  });

  it('reuses keys made by ssh-keygen', async function () {
    const r = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'ssh_host_ed25519_key')]);
    expect(r.code).to.equal(0);
    const pub = fs.readFileSync(path.join(dir, 'ssh_host_ed25519_key.pub'), 'utf8').split(' ')[1];
    const { keys, generated } = loadHostKeys(dir);
    expect(generated.map((f) => path.basename(f))).to.not.include('ssh_host_ed25519_key');
    expect(keys[0]!.key.getPublicSSH().toString('base64')).to.equal(pub);
  });

  it('refuses a group- or world-readable key', function () {
    loadHostKeys(dir);
    fs.chmodSync(path.join(dir, 'ssh_host_rsa_key'), 0o644);
    expect(() => loadHostKeys(dir)).to.throw(HostKeyError, /ssh_host_rsa_key has permissions 0644.*chmod 600/);
  });

  it('refuses an unparsable key', function () {
    fs.writeFileSync(path.join(dir, 'ssh_host_ecdsa_key'), 'not a key\n', { mode: 0o600 });
    expect(() => loadHostKeys(dir)).to.throw(HostKeyError, /cannot parse host key .*ssh_host_ecdsa_key/);
  });

  it('refuses an unreadable key (a directory in its place)', function () {
    fs.mkdirSync(path.join(dir, 'ssh_host_ed25519_key'), { mode: 0o700 });
    expect(() => loadHostKeys(dir)).to.throw(HostKeyError, /cannot read host key .*ssh_host_ed25519_key/);
  });

  it('makes the daemon refuse to start with one clear line', async function () {
    loadHostKeys(dir);
    fs.chmodSync(path.join(dir, 'ssh_host_ed25519_key'), 0o640);
    const r = await run(process.execPath, [BIN, '-p', '0', '--ip', '127.0.0.1', '-k', dir, 'http://127.0.0.1:9']);
    expect(r.code).to.equal(1);
    const lines = (r.stdout.toString() + r.stderr).trim().split('\n');
    expect(lines).to.have.length(1);
    expect(lines[0]).to.match(/error: cannot start: host key .*ssh_host_ed25519_key has permissions 0640/);
  });
});
