// Clients other than Debian 12's OpenSSH 9.2, through the real daemon into
// the real sshd: OpenSSH 10.0's sftp and scp, PuTTY (Debian 12's 0.78:
// plink, pscp, psftp), curl on libssh2 (Debian 12's 1.10, the library
// libgit2 and PHP's ssh2 use too) and paramiko (Debian 12's 2.12, what
// Python tools and Ansible's paramiko connection use). PuTTY and paramiko pick
// AES-CTR first; PuTTY also offers AES-GCM, paramiko does not, so one is
// switched to AES-GCM (--prefer-aes-gcm ctr, the default) and the other
// stays on AES-CTR with an HMAC, which the relay loop takes too.
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { useEnv } from './helpers/fixture.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { RECENT_SSH_CLIENT, askpassEnv, fileCopyOptions, run, type RunOptions, type RunResult } from './helpers/ssh.js';
import { waitFor } from './helpers/wait.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Debian's python3, which has python3-paramiko (a python3 earlier on PATH may not). */
const DEBIAN_PYTHON = '/usr/bin/python3';

function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

describe('other clients: the sftp and scp of OpenSSH 9.9 or later', function () {
  const env = useEnv();

  it('puts and gets a file with sftp, and copies it both ways with scp (which speaks SFTP)', async function () {
    const bin = path.dirname(RECENT_SSH_CLIENT);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-openssh-'));
    try {
      const data = crypto.randomBytes(8 * 1024 * 1024);
      const local = path.join(tmp, 'data.bin');
      fs.writeFileSync(local, data);
      // -S: their own ssh, not the system's.
      const options = ['-S', RECENT_SSH_CLIENT, ...fileCopyOptions(env.proxy.port)];
      const remote = `${env.user.name}@127.0.0.1`;
      const runOptions = { env: askpassEnv(env.token) };
      const batch = `put ${local} sftp.bin\nget sftp.bin ${local}.sftp\nrm sftp.bin\n`;
      const sftp = await run(path.join(bin, 'sftp'), [...options, '-o', 'BatchMode=no', '-b', '-', remote], { ...runOptions, input: batch });
      expect(sftp.code, sftp.stderr).to.equal(0);
      expect(sha256(fs.readFileSync(`${local}.sftp`))).to.equal(sha256(data));
      const up = await run(path.join(bin, 'scp'), [...options, local, `${remote}:scp.bin`], runOptions);
      expect(up.code, up.stderr).to.equal(0);
      const down = await run(path.join(bin, 'scp'), [...options, `${remote}:scp.bin`, `${local}.scp`], runOptions);
      expect(down.code, down.stderr).to.equal(0);
      expect(sha256(fs.readFileSync(`${local}.scp`))).to.equal(sha256(data));
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('other clients: PuTTY (plink, pscp, psftp)', function () {
  const env = useEnv();
  let tmp: string;
  /** Options every PuTTY tool takes here: batch mode, the token from a file, the proxy's host key pinned. */
  let puttyOptions: string[];

  before(async function () {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-putty-'));
    fs.writeFileSync(path.join(tmp, 'token'), env.token, { mode: 0o600 });
    const fingerprint = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', path.join(env.proxy.keyDir, 'ssh_host_ed25519_key.pub')]);
    puttyOptions = ['-batch', '-P', String(env.proxy.port), '-l', env.user.name, '-pwfile', path.join(tmp, 'token'), '-hostkey', fingerprint.stdout.toString().split(' ')[1]!];
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** A PuTTY tool, with a home of its own (PuTTY keeps a random seed there). */
  const putty = (tool: string, args: string[], options: RunOptions = {}): Promise<RunResult> =>
    run(tool, [...puttyOptions, ...args], { ...options, env: { ...process.env, HOME: tmp } });

  it('plink logs in with the token, runs a command and returns its exit status', async function () {
    const r = await putty('plink', ['-ssh', '127.0.0.1', 'id -un; exit 3']);
    expect(r.stdout.toString(), r.stderr).to.equal(`${env.user.name}\n`);
    expect(r.code).to.equal(3);
  });

  it('plink is switched from AES-CTR to AES-GCM once it uploads bulk data, which arrives intact', async function () {
    const data = crypto.randomBytes(16 * 1024 * 1024);
    const r = await putty('plink', ['-v', '-ssh', '127.0.0.1', 'sha256sum'], { input: data });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString().split(' ')[0]).to.equal(sha256(data));
    const ciphers = [...r.stderr.matchAll(/Initialised (.+) outbound encryption/g)].map((m) => m[1]!);
    expect(ciphers.length, r.stderr).to.equal(2);
    expect(ciphers[0]).to.match(/SDCTR/);
    expect(ciphers[1]).to.match(/GCM/);
  });

  it('pscp puts and gets a file over SFTP', async function () {
    const data = crypto.randomBytes(8 * 1024 * 1024);
    const local = path.join(tmp, 'put.bin');
    fs.writeFileSync(local, data);
    const put = await putty('pscp', ['-sftp', local, '127.0.0.1:pscp-test.bin']);
    expect(put.code, put.stderr).to.equal(0);
    const back = path.join(tmp, 'get.bin');
    const get = await putty('pscp', ['-sftp', '127.0.0.1:pscp-test.bin', back]);
    expect(get.code, get.stderr).to.equal(0);
    expect(sha256(fs.readFileSync(back))).to.equal(sha256(data));
  });

  it('psftp runs a batch of commands', async function () {
    const batch = path.join(tmp, 'batch');
    fs.writeFileSync(batch, 'mkdir psftp-test\ncd psftp-test\npwd\ncd ..\nrmdir psftp-test\n');
    const r = await putty('psftp', ['-b', batch, '127.0.0.1']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.contain(`Remote directory is now ${env.user.home}/psftp-test`);
  });
});

describe("other clients: curl's sftp:// and scp:// (libssh2, as libgit2 and PHP's ssh2 use it)", function () {
  const env = useEnv();

  it('checks the host key, logs in with the token, puts and gets a file over SFTP and gets it over SCP, and refuses a wrong token', async function () {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-libssh2-'));
    try {
      // Debian 12's libssh2 1.10 picks the ECDSA host key; curl wants its SHA-256 in base64.
      const fingerprint = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', path.join(env.proxy.keyDir, 'ssh_host_ecdsa_key.pub')]);
      const hostKey = fingerprint.stdout.toString().split(' ')[1]!.replace(/^SHA256:/, '');
      const origin = `127.0.0.1:${env.proxy.port}`;
      const curl = (user: string, secret: string, args: string[]): Promise<RunResult> =>
        run('curl', ['--silent', '--show-error', '--hostpubsha256', hostKey, '--user', `${user}:${secret}`, ...args]);

      const data = crypto.randomBytes(8 * 1024 * 1024);
      const local = path.join(tmp, 'data.bin');
      fs.writeFileSync(local, data);
      const put = await curl(env.user.name, env.token, ['--upload-file', local, `sftp://${origin}/~/libssh2.bin`]);
      expect(put.code, put.stderr).to.equal(0);
      const listing = await curl(env.user.name, env.token, ['--list-only', `sftp://${origin}/~/`]);
      expect(listing.code, listing.stderr).to.equal(0);
      expect(listing.stdout.toString().split('\n')).to.include('libssh2.bin');
      for (const scheme of ['sftp', 'scp']) {
        const back = path.join(tmp, `back.${scheme}`);
        const get = await curl(env.user.name, env.token, ['--output', back, `${scheme}://${origin}/~/libssh2.bin`]);
        expect(get.code, get.stderr).to.equal(0);
        expect(sha256(fs.readFileSync(back)), scheme).to.equal(sha256(data));
      }

      const refused = await curl(env.user.name, 'not-a-token', [`sftp://${origin}/~/`]);
      expect(refused.code, 'CURLE_LOGIN_DENIED').to.equal(67);
      const wrongHost = await run('curl', ['--silent', '--show-error', '--hostpubsha256', 'A'.repeat(43), '--user', `${env.user.name}:${env.token}`, `sftp://${origin}/~/`]);
      expect(wrongHost.code, 'CURLE_PEER_FAILED_VERIFICATION').to.equal(60);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('other clients: paramiko', function () {
  const env = useEnv({ proxyArgs: ['--metrics-ip', '127.0.0.1', '--metrics-port', '0'] });

  it('checks the host key, logs in with the token, runs commands, uploads and round-trips a file over SFTP, on AES-CTR with an HMAC, through the relay loop', async function () {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-paramiko-'));
    const origin = await waitFor(() => metricsOrigin(env.proxy.logs()), { timeoutMs: 10_000, what: 'the metrics address in the log' });
    const forwarded = async () => {
      const m = await scrapeMetrics(origin);
      const count = (name: string) => m.get(`jupyter_ssh_proxy_packets_forwarded_total{path="${name}"}`) ?? 0;
      return { loop: count('relay_loop') + count('socket_relay'), ssh2: count('ssh2') };
    };
    const before = await forwarded();
    try {
      const knownHosts = path.join(tmp, 'known_hosts');
      const hostKey = fs.readFileSync(path.join(env.proxy.keyDir, 'ssh_host_ed25519_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
      fs.writeFileSync(knownHosts, `[127.0.0.1]:${env.proxy.port} ${hostKey}\n`);
      const size = 8 * 1024 * 1024;
      const r = await run(DEBIAN_PYTHON, [path.join(REPO_ROOT, 'test', 'clients', 'paramiko_session.py'), String(env.proxy.port), env.user.name, knownHosts, String(size)], {
        env: { ...process.env, JSP_TEST_TOKEN: env.token },
      });
      expect(r.code, r.stderr).to.equal(0);
      const seen = JSON.parse(r.stdout.toString()) as Record<string, unknown>;
      expect(seen.stdout).to.equal(`${env.user.name}\n`);
      expect(seen.exitStatus).to.equal(3);
      expect(seen.received, 'the upload').to.equal(seen.sent);
      expect(seen.sftpRoundTrip, 'the SFTP round trip').to.equal(seen.sent);
      // paramiko offers no AES-GCM: it keeps its first choice.
      expect(seen.cipher).to.deep.equal(['aes128-ctr', 'aes128-ctr']);
      expect(seen.cipherAfter).to.deep.equal(['aes128-ctr', 'aes128-ctr']);
      expect(seen.mac).to.deep.equal(['hmac-sha2-256', 'hmac-sha2-256']);
      // 24 MiB of channel data in packets of up to 32 KiB, nearly all of it relayed by the addon.
      const after = await forwarded();
      const loop = after.loop - before.loop;
      const oneByOne = after.ssh2 - before.ssh2;
      expect(loop, `packets through the relay loop (${oneByOne} through ssh2)`).to.be.greaterThan(500);
      expect(loop / (loop + oneByOne), 'share of the relay loop').to.be.greaterThan(0.8);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
