// --upstream websocket (lib/websocketupstream.ts and server-extension/): the
// session runs in the user's Jupyter server itself, through the
// jupyter_ssh_proxy_server extension loaded into the real single-user server
// of a real JupyterHub, with the real ssh, sftp and sshd. LocalProcessSpawner
// stands in for a container spawner: the daemon reaches the server only
// through the Hub's proxy, as it would a container.
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useEnv } from './helpers/fixture.js';
import { REPO_ROOT } from './helpers/proxy.js';
import { createHubUser, createToken } from './helpers/hub.js';
import { fileCopyOptions, askpassEnv, keyLoginOptions, run, ssh, sshOptions } from './helpers/ssh.js';
import { createUnixUser, type UnixUser } from './helpers/unixuser.js';
import { waitFor } from './helpers/wait.js';
import http from 'node:http';
import net from 'node:net';
import { generateKeyPair } from '../lib/ssh2internals.js';
import { UpstreamError } from '../lib/upstream.js';
import { WebSocketUpstream } from '../lib/websocketupstream.js';

const EXTENSION_SOURCE = path.join(REPO_ROOT, 'server-extension');

/** jupyter_server 1.23, Debian's, unpacked by scripts/install-deps.sh --test beside the system's classic notebook server. */
const JUPYTER_SERVER_ROOT = '/opt/jupyter-ssh-proxy-test/jupyter-server/usr/lib/python3/dist-packages';

/** The single-user servers the extension is tested in: the classic notebook server (Debian's 6.4) and jupyter_server. */
const SERVERS = [
  { name: 'the classic notebook server', app: 'notebook.notebookapp.NotebookApp', pythonPath: [] as string[], version: /^6\./ },
  { name: 'jupyter_server', app: 'jupyter_server.serverapp.ServerApp', pythonPath: [JUPYTER_SERVER_ROOT], version: /^1\.23\./ },
];

/**
 * The single-user servers run `app` and find the extension as pip installed
 * it (`site`), enabled by the configuration pip put next to it, as in an
 * image; users named jsp-n-* get servers where it is not enabled.
 */
function loadExtension(site: string, server: (typeof SERVERS)[number]): string {
  return [
    `c.Spawner.environment['JUPYTERHUB_SINGLEUSER_APP'] = ${JSON.stringify(server.app)}`,
    `c.Spawner.environment['PYTHONPATH'] = ${JSON.stringify([site, ...server.pythonPath].join(':'))}`,
    `c.Spawner.environment['JUPYTER_CONFIG_PATH'] = ${JSON.stringify(path.join(site, 'etc', 'jupyter'))}`,
    'def _without_extension(spawner):',
    "    if spawner.user.name.startswith('jsp-n-'):",
    "        spawner.environment = {k: v for k, v in spawner.environment.items() if k != 'JUPYTER_CONFIG_PATH'}",
    'c.Spawner.pre_spawn_hook = _without_extension',
  ].join('\n');
}

for (const server of SERVERS) {
  describe(`sessions in the user's server (--upstream websocket): the server extension in ${server.name}, real ssh and sshd`, function () {
    this.timeout(180_000);
    const dir = path.join(os.tmpdir(), `jsp-wsup-${process.pid}-${crypto.randomBytes(3).toString('hex')}`);
    const caFile = path.join(dir, 'trusted_user_ca_keys');
    const site = path.join(dir, 'site');
    before(async function () {
      this.timeout(120_000);
      fs.mkdirSync(dir, { mode: 0o755 });
      // As server-extension/README.md says: pip install, here from a copy (pip builds in the source folder).
      const source = path.join(dir, 'source');
      fs.cpSync(EXTENSION_SOURCE, source, { recursive: true });
      const pip = await run('/usr/bin/python3', ['-m', 'pip', 'install', '-q', '--no-build-isolation', '--no-deps', '--no-index', '--target', site, source]);
      expect(pip.code, pip.stderr).to.equal(0);
      fs.rmSync(source, { recursive: true, force: true });
      const made = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'ca')]);
      expect(made.code, made.stderr).to.equal(0);
      fs.copyFileSync(path.join(dir, 'ca.pub'), caFile);
    });
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const env = useEnv({
      hub: { extraConfig: loadExtension(site, server) },
      proxyArgs: ['--upstream', 'websocket', '--trusted-user-ca-keys', caFile],
      serviceToken: true,
    });
    const others: UnixUser[] = [];
    after(async function () {
      this.timeout(60_000);
      for (const other of others) await other.remove();
    });

    it('says at start where sessions run', () => {
      expect(env.proxy.logLine('sessions run in the users')).to.include(`sshd -i through ${env.hub.url.replace(/^http/, 'ws').replace(/\/*$/, '/')}user/NAME/ssh-proxy/connect`);
    });

    before(() => {
      for (const dir of server.pythonPath) expect(fs.existsSync(dir), `run scripts/install-deps.sh --test: ${dir} is missing`).to.equal(true);
      // An unprivileged sshd (the extension's) gives a terminal the tty group as every container runtime mounts /dev/pts
      // (Debian's defaults); scripts/install-deps.sh --test sets them where the machine's mount lacks them.
      const devpts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').filter((line) => line.split(' ')[1] === '/dev/pts');
      expect(devpts.at(-1), 'run scripts/install-deps.sh --test: /dev/pts needs gid=5,mode=620').to.match(/\bgid=5\b.*\bmode=620\b|\bmode=620\b.*\bgid=5\b/);
    });

    it("logs in with a token into the user's server, started on demand: commands, a terminal, the server's environment", async () => {
      const result = await env.ssh(['id -un; echo $HOME; pwd; echo "${JUPYTERHUB_USER:-none}"; echo "$PATH"; echo "${JSP_TEST_HUB_ID:-none}"']);
      expect(result.code, result.stderr).to.equal(0);
      const [user, home, cwd, hubUser, sessionPath, marker] = result.stdout.toString().split('\n');
      expect([user, home, cwd]).to.deep.equal([env.user.name, env.user.home, env.user.home]);
      // The server's environment, as its own terminals have it: what the Hub gave it, and its PATH (not sshd's default).
      expect(hubUser).to.equal(env.user.name);
      expect(marker).to.not.equal('none');
      expect(sessionPath).to.not.equal('/usr/local/bin:/usr/bin:/bin:/usr/games');
      // The server is the one this describe is about.
      const api = await fetch(`${env.hub.url.replace(/\/*$/, '/')}user/${env.user.name}/api`, { headers: { Authorization: `token ${env.token}` } });
      expect(((await api.json()) as { version: string }).version).to.match(server.version);
      expect(result.stderr).to.include('Your server is not running; starting it...');
      const tty = await env.ssh(['tty'], ['-tt']);
      expect(tty.code, tty.stderr).to.equal(0);
      expect(tty.stdout.toString()).to.match(/^\/dev\/pts\//);
    });

    it("forwards a port from the server's side (-W, as ProxyJump and -L use it), and ends the session's sshd with it", async () => {
      const server = net.createServer((socket) => socket.end('hello from the server side\n'));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const port = (server.address() as net.AddressInfo).port;
        const r = await env.ssh([], ['-o', 'LogLevel=ERROR', '-W', `127.0.0.1:${port}`]);
        expect(r.code, r.stderr).to.equal(0);
        expect(r.stdout.toString()).to.equal('hello from the server side\n');
      } finally {
        server.close();
      }
      // Every session's sshd -i (the extension's, run as the user) is gone once its connection is, and its key folder.
      await waitFor(async () => (await run('pgrep', ['-u', env.user.name, '-f', 'sshd -i'])).code === 1, {
        timeoutMs: 10_000,
        what: "the sessions' sshd -i to exit",
      });
      const uid = Number((await run('id', ['-u', env.user.name])).stdout.toString());
      const folders = () => fs.readdirSync(os.tmpdir()).filter((name) => name.startsWith('jupyter-ssh-proxy-') && fs.statSync(path.join(os.tmpdir(), name)).uid === uid);
      await waitFor(() => folders().length === 0, { timeoutMs: 10_000, what: "the sessions' key folders to go" });
    });

    it('moves files both ways with sftp and scp, byte for byte', async () => {
      const local = path.join(dir, 'payload.bin');
      const data = crypto.randomBytes(3 * 1024 * 1024 + 17);
      fs.writeFileSync(local, data);
      const back = path.join(dir, 'back.bin');
      const batch = path.join(dir, 'batch');
      fs.writeFileSync(batch, `put ${local} ws-payload.bin\nget ws-payload.bin ${back}\n`);
      const sftp = await run('sftp', [...fileCopyOptions(env.proxy.port), '-o', 'BatchMode=no', '-b', batch, `${env.user.name}@127.0.0.1`], { env: askpassEnv(env.token) });
      expect(sftp.code, sftp.stderr).to.equal(0);
      expect(fs.readFileSync(back).equals(data)).to.equal(true);
      expect(fs.readFileSync(path.join(env.user.home, 'ws-payload.bin')).equals(data)).to.equal(true);
      const scpBack = path.join(dir, 'scp-back.bin');
      const scp = await run('scp', [...fileCopyOptions(env.proxy.port), `${env.user.name}@127.0.0.1:ws-payload.bin`, scpBack], { env: askpassEnv(env.token) });
      expect(scp.code, scp.stderr).to.equal(0);
      expect(fs.readFileSync(scpBack).equals(data)).to.equal(true);
    });

    it('mirrors a tree with rsync, and forwards the agent (-A): the server side lists the local agent\'s key', async () => {
      const tree = path.join(dir, 'tree');
      fs.mkdirSync(path.join(tree, 'sub'), { recursive: true });
      const data = crypto.randomBytes(200_000);
      fs.writeFileSync(path.join(tree, 'sub', 'b.bin'), data);
      // sshOptions holds no argument with a space: rsync's -e takes it joined.
      const rsh = ['ssh', ...sshOptions(env.proxy.port), '-o', 'LogLevel=ERROR'].join(' ');
      const up = await run('rsync', ['-a', '-e', rsh, `${tree}/`, `${env.user.name}@127.0.0.1:ws-tree/`], { env: askpassEnv(env.token) });
      expect(up.code, up.stderr).to.equal(0);
      expect(fs.readFileSync(path.join(env.user.home, 'ws-tree', 'sub', 'b.bin')).equals(data)).to.equal(true);

      const key = path.join(dir, `agent-${crypto.randomBytes(3).toString('hex')}`);
      expect((await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'in-the-agent', '-f', key])).code).to.equal(0);
      // ssh-agent with a command: the agent lives as long as the command.
      const script = `ssh-add -q ${key} && exec ${rsh} -A ${env.user.name}@127.0.0.1 'ssh-add -l'`;
      const listed = await run('ssh-agent', ['sh', '-c', script], { env: askpassEnv(env.token) });
      expect(listed.code, listed.stderr).to.equal(0);
      expect(listed.stdout.toString()).to.match(/^256 SHA256:\S+ in-the-agent \(ED25519\)$/m);
    });

    it("logs in with a certificate of --trusted-user-ca-keys, with its force-command applied by the server's sshd", async () => {
      const key = path.join(dir, `k-${crypto.randomBytes(3).toString('hex')}`);
      expect((await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key])).code).to.equal(0);
      const signed = await run('ssh-keygen', ['-q', '-s', path.join(dir, 'ca'), '-I', 'ws', '-n', env.user.name, '-O', 'force-command=echo "forced: $SSH_ORIGINAL_COMMAND"', `${key}.pub`]);
      expect(signed.code, signed.stderr).to.equal(0);
      const result = await run('ssh', [...keyLoginOptions(env.proxy.port, key), `${env.user.name}@127.0.0.1`, 'id', '-un']);
      expect(result.code, result.stderr).to.equal(0);
      expect(result.stdout.toString()).to.equal('forced: id -un\n');
    });

    it('tells the user in one line when their server has no SSH endpoint, and serves the next login', async () => {
      const other = await createUnixUser('n');
      others.push(other);
      await createHubUser(env.hub, other.name);
      const { token } = await createToken(env.hub, other.name);
      const before = env.proxy.logs().length;
      const refused = await ssh(env.proxy.port, other.name, token, ['true']);
      expect(refused.code).to.equal(255);
      expect(refused.stderr).to.include('Your server has no SSH endpoint: the jupyter_ssh_proxy_server extension is not installed or not enabled in its image; ask your JupyterHub administrator');
      expect(env.proxy.logs().slice(before)).to.match(/ws:\/\/127\.0\.0\.1:\d+\/user\/jsp-n-\w+\/ssh-proxy\/connect answered HTTP 404/);
      const next = await env.ssh(['id', '-un']);
      expect(next.code, next.stderr).to.equal(0);
    });
  });
}

describe('WebSocketUpstream (lib/websocketupstream.ts): addresses, and what a user reads when the endpoint fails', function () {
  const upstream = (serversUrl: string) => new WebSocketUpstream({ serversUrl, serviceToken: 'service-token', timeoutMs: 5000 });
  const noLog = () => undefined;

  it("addresses a user's default and named servers under the Hub's base URL, names escaped", () => {
    expect(upstream('http://hub.example:8000').endpoint({ hubUser: 'alice', server: '' })).to.equal('ws://hub.example:8000/user/alice/ssh-proxy/connect');
    expect(upstream('https://hub.example/jupyter/').endpoint({ hubUser: 'bob@x.org', server: 'gpu 1' })).to.equal(
      'wss://hub.example/jupyter/user/bob%40x.org/gpu%201/ssh-proxy/connect',
    );
    expect(upstream('https://hub.example/jupyter').endpoint({ hubUser: 'a/b', server: '' })).to.equal('wss://hub.example/jupyter/user/a%2Fb/ssh-proxy/connect');
  });

  /** A stand-in for the Hub's proxy that answers every upgrade with `status`; records the requests' headers. */
  async function answering(status: number): Promise<{ url: string; headers: http.IncomingHttpHeaders[]; close(): void }> {
    const headers: http.IncomingHttpHeaders[] = [];
    const server = http.createServer((req, res) => {
      headers.push(req.headers);
      res.writeHead(status).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/`, headers, close: () => server.close() };
  }

  for (const [status, message] of [
    [404, 'Your server has no SSH endpoint: the jupyter_ssh_proxy_server extension is not installed or not enabled in its image'],
    [403, 'Your server refused the SSH proxy (its service token needs access:servers)'],
    [302, 'Your server refused the SSH connection'],
  ] as const) {
    it(`HTTP ${status}: "${message}"`, async () => {
      const hub = await answering(status);
      try {
        const err = await upstream(hub.url).connect({ hubUser: 'alice', server: '' }, noLog).then(
          () => expect.fail('connected'),
          (e: unknown) => e,
        );
        expect(err).to.be.instanceOf(UpstreamError);
        expect((err as Error).message).to.include(message);
        // The service token and the daemon's key went with the request.
        expect(hub.headers[0]?.authorization).to.equal('token service-token');
        expect(hub.headers[0]?.['x-ssh-proxy-key']).to.match(/^ssh-ed25519 [A-Za-z0-9+/]+=*$/);
      } finally {
        hub.close();
      }
    });
  }

  it('a proxy that does not answer: "Your server is not reachable through the Hub"', async () => {
    const hub = await answering(200);
    hub.close();
    const logged: string[] = [];
    const err = await upstream(hub.url).connect({ hubUser: 'alice', server: '' }, (_level, message) => logged.push(message)).catch((e: Error) => e);
    expect((err as Error).message).to.equal('Your server is not reachable through the Hub; try again in a moment');
    expect(logged.join('\n')).to.match(/cannot open ws:\/\/127\.0\.0\.1:\d+\/user\/alice\/ssh-proxy\/connect: connect ECONNREFUSED/);
  });

  it('refuses an endpoint that upgrades but names no usable host key or user', async () => {
    const server = http.createServer();
    server.on('upgrade', (req, socket) => {
      const accept = crypto.createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      const hostKey = generateKeyPair('ed25519').public.trim().split(' ').slice(0, 2).join(' ');
      socket.write(
        ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Accept: ${accept}`, `X-SSH-Host-Key: ${hostKey}`, 'X-SSH-User: bad user', '', ''].join('\r\n'),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
      const logged: string[] = [];
      const err = await upstream(url).connect({ hubUser: 'alice', server: '' }, (_level, message) => logged.push(message)).catch((e: Error) => e);
      expect(err).to.be.instanceOf(UpstreamError);
      expect(logged.join('\n')).to.include('sent no usable X-SSH-Host-Key and X-SSH-User headers');
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
