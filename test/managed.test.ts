// The daemon as a real JupyterHub managed service, with the least-privilege
// role the README recommends: JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN come
// from the Hub, the URL argument is left out, and the service token starts a
// server that the user's token could not start.
import { expect } from 'chai';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { IDENT } from '../lib/config.js';
import { DAEMON_ENV, DAEMON_NODE_ARGS } from './helpers/deployed.js';
import { createHubUser, createToken, startHub, type Hub } from './helpers/hub.js';
import { childrenNamed, memoryContains } from './helpers/procs.js';
import { BIN } from './helpers/proxy.js';
import { ssh } from './helpers/ssh.js';
import { createUnixUser, type UnixUser } from './helpers/unixuser.js';
import { freePort, waitFor } from './helpers/wait.js';

/** The role from README.md's "Running as a JupyterHub managed service". */
export const PROXY_SERVICE_SCOPES = ['read:users:name', 'read:users:groups', 'read:servers', 'servers', 'users:activity'];

/**
 * True once the daemon on `port` greets with its own identification line.
 * A bare TCP connect is not enough: the port was only free when freePort()
 * looked, and whatever else listens there now would pass that check.
 */
function daemonGreets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(5000, () => done(false));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes('\n')) done(received.startsWith(`SSH-2.0-${IDENT}`));
    });
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
  });
}

/** The pid of the daemon the Hub started on `port`, found by its command line. */
function daemonPid(port: number): number {
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes(BIN) && argv[argv.indexOf('-p') + 1] === String(port)) return Number(entry);
    } catch {
      // the process exited while we looked
    }
  }
  throw new Error(`no daemon on port ${port}`);
}

describe('as a JupyterHub managed service (least-privilege role)', function () {
  let hub: Hub;
  let user: UnixUser;
  let port: number;
  let keyDir: string;
  let runtimeDir: string;

  before(async function () {
    this.timeout(120_000);
    port = await freePort();
    keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-managed-keys-'));
    // Not the default /run/jupyter-ssh-proxy, which would outlive the test; under
    // /run and 0755 because sshd's StrictModes checks the folders above its key files.
    runtimeDir = fs.mkdtempSync('/run/jsp-managed-');
    fs.chmodSync(runtimeDir, 0o755);
    const command = [process.execPath, ...DAEMON_NODE_ARGS, BIN, '--ip', '127.0.0.1', '-p', String(port), '-k', keyDir, '--runtime-dir', runtimeDir];
    hub = await startHub({
      extraConfig: [
        'import os',
        'c.JupyterHub.services.append({',
        "    'name': 'ssh-proxy',",
        `    'command': ${JSON.stringify(command)},`,
        // The fixture finds leftover processes by this marker.
        // As in the README: the daemon's malloc settings (docs/deploy.md).
        `    'environment': {'JSP_TEST_HUB_ID': os.environ['JSP_TEST_HUB_ID'], **${JSON.stringify(DAEMON_ENV)}},`,
        '})',
        `c.JupyterHub.load_roles.append({'name': 'ssh-proxy', 'scopes': ${JSON.stringify(PROXY_SERVICE_SCOPES)}, 'services': ['ssh-proxy']})`,
      ].join('\n'),
    });
    user = await createUnixUser('m');
    await createHubUser(hub, user.name);
    await waitFor(() => daemonGreets(port), { timeoutMs: 60_000, what: 'the managed proxy to greet on its port' });
  });

  after(async function () {
    this.timeout(60_000);
    await user?.remove();
    await hub?.stop();
    fs.rmSync(keyDir, { recursive: true, force: true });
    if (runtimeDir) fs.rmSync(runtimeDir, { recursive: true, force: true });
  });

  it('starts the server with its service token for a user token that only has access:servers', async function () {
    const { token } = await createToken(hub, user.name, [`access:servers!user=${user.name}`]);
    const r = await ssh(port, user.name, token, ['id -un'], ['-o', 'NumberOfPasswordPrompts=1']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.equal(`${user.name}\n`);
    expect(r.stderr).to.contain('Your server is not running; starting it...');
    const model = await hub.api<{ servers: Record<string, { ready: boolean }> }>('GET', `/users/${user.name}`);
    expect(model.body.servers['']?.ready).to.equal(true);
    // The daemon logs into the Hub's log; no token may appear there.
    const hubLog = fs.readdirSync(hub.dir).filter((f) => f.endsWith('.log')).map((f) => fs.readFileSync(path.join(hub.dir, f), 'utf8')).join('');
    expect(hubLog).to.contain('JupyterHub API at http://127.0.0.1:');
    expect(hubLog).to.not.contain(token);
  });

  it("runs on jemalloc with its purging thread, as the README's environment entry asks, and starts sshd without it or the service token", async function () {
    const pid = daemonPid(port);
    expect(fs.readFileSync(`/proc/${pid}/maps`, 'utf8')).to.match(/\/libjemalloc\.so\.2/);
    const threads = fs.readdirSync(`/proc/${pid}/task`).map((tid) => fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim());
    expect(threads).to.include('jemalloc_bg_thd');
    const hubLog = fs.readdirSync(hub.dir).filter((f) => f.endsWith('.log')).map((f) => fs.readFileSync(path.join(hub.dir, f), 'utf8')).join('');
    expect(hubLog).to.match(/native crypto binding available, jemalloc with background purging/);

    // A session held open (cat waits for our stdin) while its sshd is inspected.
    const { token } = await createToken(hub, user.name, [`access:servers!user=${user.name}`]);
    let session: ChildProcess | undefined;
    let output = '';
    const finished = ssh(port, user.name, token, ['echo up; cat'], [], {
      onSpawn: (child) => {
        session = child;
        child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
      },
    });
    try {
      await waitFor(() => output.includes('up\n'), { timeoutMs: 60_000, what: 'the session to run' });
      const sshds = childrenNamed(pid, 'sshd');
      expect(sshds).to.have.length(1);
      // sshd overwrites its environ with its process title, so its memory map is
      // the evidence: a preloaded jemalloc would be mapped.
      expect(fs.readFileSync(`/proc/${sshds[0]}/maps`, 'utf8')).to.not.match(/libjemalloc/);
      // Nor is the service token the Hub gave the daemon anywhere in the
      // memory of an sshd of the session, the one that runs as the user among them.
      const daemonEnv = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      const serviceToken = daemonEnv.find((v) => v.startsWith('JUPYTERHUB_API_TOKEN='))?.slice('JUPYTERHUB_API_TOKEN='.length);
      expect(serviceToken, 'the Hub passes the daemon its token').to.match(/^\S{32,}$/);
      const sessionSshds = [sshds[0]!, ...childrenNamed(sshds[0]!, 'sshd')];
      expect(sessionSshds.length, 'the privileged sshd and the one of the user').to.be.at.least(2);
      for (const sshd of sessionSshds) expect(memoryContains(sshd, Buffer.from(serviceToken!)), `sshd ${sshd}`).to.equal(false);
    } finally {
      session?.stdin!.end();
    }
    expect((await finished).code).to.equal(0);
  });
});
