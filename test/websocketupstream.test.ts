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
import { createHubUser, createToken, DEBIAN_12, ensureServer, serverModel, stopServer } from './helpers/hub.js';
import { fileCopyOptions, askpassEnv, keyLoginOptions, run, ssh, sshOptions } from './helpers/ssh.js';
import { CLASSIC_NOTEBOOK_SERVER, JUPYTER_SERVER_2, SESSION_SOCKET, useServerExtension, type SingleUserServer } from './helpers/serverextension.js';
import { newKey, publicLine } from './helpers/sshkeys.js';
import { createUnixUser, listAuthorizedKeys, type UnixUser } from './helpers/unixuser.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { waitFor } from './helpers/wait.js';
import http from 'node:http';
import net from 'node:net';
import { generateKeyPair } from '../lib/ssh2internals.js';
import { UpstreamError } from '../lib/upstream.js';
import { WebSocketUpstream } from '../lib/websocketupstream.js';
import { socketFd, takeSharedReads } from '../lib/sharedreads.js';

/** jupyter_server 1.23, Debian's, unpacked by scripts/install-deps.sh --test beside the system's classic notebook server. */
const JUPYTER_SERVER_ROOT = '/opt/jupyter-ssh-proxy-test/jupyter-server/usr/lib/python3/dist-packages';

/**
 * The single-user servers the extension is tested in: the classic notebook server (Debian 12's 6.4), jupyter_server 1.23
 * with Debian 12's JupyterHub 3.0, and jupyter_server 2 with Debian 13's JupyterHub 5, Python 3.13 and OpenSSH 10.
 */
const SERVERS: (SingleUserServer & { version: RegExp; frames?: boolean })[] = [
  { ...CLASSIC_NOTEBOOK_SERVER, version: /^6\./ },
  // Its daemon carries sessions in WebSocket messages, as with an older extension or a front proxy that reads frames.
  { name: 'jupyter_server 1', app: 'jupyter_server.serverapp.ServerApp', pythonPath: [JUPYTER_SERVER_ROOT], version: /^1\.23\./, frames: true },
  { ...JUPYTER_SERVER_2, version: /^2\./ },
];

for (const server of SERVERS) {
  describe(`sessions in the user's server (--upstream websocket): the server extension in ${server.name}, real ssh and sshd`, function () {
    this.timeout(180_000);
    const dir = path.join(os.tmpdir(), `jsp-wsup-${process.pid}-${crypto.randomBytes(3).toString('hex')}`);
    const caFile = path.join(dir, 'trusted_user_ca_keys');
    before(async function () {
      fs.mkdirSync(dir, { mode: 0o755 });
      const made = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'ca')]);
      expect(made.code, made.stderr).to.equal(0);
      fs.copyFileSync(path.join(dir, 'ca.pub'), caFile);
    });
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const extension = useServerExtension(server);
    const env = useEnv({
      hub: { extraConfig: extension, namedServers: true, distribution: server.distribution },
      proxyArgs: [
        '--upstream', 'websocket', ...(server.frames ? ['--websocket-frames'] : []),
        '--trusted-user-ca-keys', caFile, '--authorized-keys-file', '.ssh/authorized_keys',
        '--metrics-ip', '127.0.0.1', '--metrics-port', '0',
      ],
      serviceToken: true,
    });
    const others: UnixUser[] = [];
    after(async function () {
      this.timeout(60_000);
      for (const other of others) await other.remove();
    });

    it('says at start where sessions run, and where key logins read keys', () => {
      expect(env.proxy.logLine('sessions run in the users')).to.include(`sshd -i through ${env.hub.url.replace(/^http/, 'ws').replace(/\/*$/, '/')}user/NAME/ssh-proxy/connect`);
      expect(env.proxy.logLine('key logins on')).to.include(".ssh/authorized_keys in each user's server, read through its extension");
    });

    /** ssh as `user` with `keyFile` alone (BatchMode): the daemon reads the keys in the user's server. */
    const keySsh = (keyFile: string, command: string[], user = env.user.name) => run('ssh', [...keyLoginOptions(env.proxy.port, keyFile), `${user}@127.0.0.1`, ...command]);
    const keyName = (what: string) => `${what}-${crypto.randomBytes(3).toString('hex')}`;

    before(() => {
      // An unprivileged sshd (the extension's) gives a terminal the tty group as every container runtime mounts /dev/pts
      // (Debian's defaults); scripts/install-deps.sh --test sets them where the machine's mount lacks them.
      const devpts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').filter((line) => line.split(' ')[1] === '/dev/pts');
      expect(devpts.at(-1), 'run scripts/install-deps.sh --test: /dev/pts needs gid=5,mode=620').to.match(/\bgid=5\b.*\bmode=620\b|\bmode=620\b.*\bgid=5\b/);
    });

    it("logs in with a token into the user's server, started on demand: commands, a terminal, the server's environment", async () => {
      const result = await env.ssh(['id -un; echo $HOME; pwd; echo "${JUPYTERHUB_USER:-none}"; echo "$PATH"; echo "${JSP_TEST_HUB_ID:-none}"; cat /etc/debian_version']);
      expect(result.code, result.stderr).to.equal(0);
      const [user, home, cwd, hubUser, sessionPath, marker, debianVersion] = result.stdout.toString().split('\n');
      // The server's files: Debian 13's in its root, as a container's would be its image's.
      const distribution = server.distribution ?? DEBIAN_12;
      expect(debianVersion).to.match(distribution.debianVersion);
      expect(((await env.hub.api<{ version: string }>('GET', '/')).body).version).to.match(distribution.version);
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

    it(server.frames
      ? "carries the session in WebSocket messages with --websocket-frames: the session's sshd reads and writes pipes from the server"
      : "carries the session as the raw stream after the upgrade: the session's sshd reads and writes the connection's socket itself", async () => {
      // The shell's parent holds the connection as sshd -i got it: one socket twice (its input and output), a TCP one; or two pipes.
      const result = await env.ssh([SESSION_SOCKET]);
      expect(result.code, result.stderr).to.equal(0);
      const [held, kind] = result.stdout.toString().split('\n');
      if (server.frames) expect([held, kind]).to.deep.equal(['none', 'not-tcp']);
      else {
        expect(held).to.match(/^socket:\[\d+\]$/);
        expect(kind).to.equal('tcp');
      }
      // Bulk data of the raw stream goes through the daemon's native loop on the sockets, as the local sshd's does.
      const origin = metricsOrigin(env.proxy.logs())!;
      const onSockets = async () => (await scrapeMetrics(origin)).get('jupyter_ssh_proxy_packets_forwarded_total{path="socket_relay"}') ?? 0;
      const before = await onSockets();
      const bulk = await env.ssh(['head -c 64M /dev/zero']);
      expect(bulk.stdout.length, bulk.stderr).to.equal(64 * 1024 * 1024);
      const relayed = (await onSockets()) - before;
      if (server.frames) expect(relayed).to.equal(0);
      else expect(relayed).to.be.above(1000);
    });

    it("refuses the raw stream to a browser's page (an Origin header), which tornado's WebSocket handshake would have refused", async () => {
      await ensureServer(env.hub, env.user.name);
      const proxyKey = generateKeyPair('ed25519').public.trim().split(' ').slice(0, 2).join(' ');
      const upgrade = (extra: Record<string, string>) =>
        new Promise<{ status: number; stream?: string }>((resolve, reject) => {
          const request = http.request(`${env.hub.url.replace(/\/*$/, '/')}user/${env.user.name}/ssh-proxy/connect`, {
            headers: {
              Connection: 'Upgrade',
              Upgrade: 'websocket',
              'Sec-WebSocket-Version': '13',
              'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
              Authorization: `token ${env.hub.serviceToken}`,
              'X-SSH-Proxy-Key': proxyKey,
              'X-SSH-Proxy-Stream': 'raw',
              ...extra,
            },
          });
          request.on('upgrade', (res, socket) => {
            socket.destroy();
            resolve({ status: res.statusCode!, stream: res.headers['x-ssh-proxy-stream'] as string | undefined });
          });
          request.on('response', (res) => {
            res.resume();
            resolve({ status: res.statusCode! });
          });
          request.on('error', reject);
          request.end();
        });
      expect(await upgrade({})).to.deep.equal({ status: 101, stream: 'raw' });
      expect((await upgrade({ Origin: 'https://elsewhere.example' })).status).to.equal(403);
    });

    it('drops a raw stream whose client is gone before its sshd starts, with one line in the log and no traceback, and serves the next login', async () => {
      await ensureServer(env.hub, env.user.name);
      // Straight to the server, not through the Hub's proxy: the proxy would end its own connection with a FIN, which the
      // answer's write outlives; a reset is what makes the extension's socket closed before sshd gets it.
      const users = await env.hub.api<{ servers: Record<string, { state: { pid: number } }> }>('GET', `/users/${env.user.name}`, undefined, env.hub.adminToken);
      const environment = fs.readFileSync(`/proc/${users.body.servers[''].state.pid}/environ`, 'utf8').split('\0');
      const serviceUrl = new URL(environment.find((entry) => entry.startsWith('JUPYTERHUB_SERVICE_URL='))!.split('=')[1]);
      const hubLog = path.join(env.hub.dir, 'hub.log');
      const logBefore = fs.readFileSync(hubLog, 'utf8').length;
      const proxyKey = generateKeyPair('ed25519').public.trim().split(' ').slice(0, 2).join(' ');
      const socket = net.connect(Number(serviceUrl.port), serviceUrl.hostname);
      await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      socket.write(
        [
          `GET ${serviceUrl.pathname.replace(/\/*$/, '/')}ssh-proxy/connect HTTP/1.1`,
          `Host: ${serviceUrl.host}`,
          'Connection: Upgrade',
          'Upgrade: websocket',
          'Sec-WebSocket-Version: 13',
          `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}`,
          `Authorization: token ${env.hub.serviceToken}`,
          `X-SSH-Proxy-Key: ${proxyKey}`,
          'X-SSH-Proxy-Stream: raw',
          '',
          '',
        ].join('\r\n'),
      );
      await new Promise<void>((resolve) => socket.write('', () => resolve()));
      socket.resetAndDestroy();
      let logged = '';
      await waitFor(() => (logged = fs.readFileSync(hubLog, 'utf8').slice(logBefore)).includes('closed before its sshd started'), {
        timeoutMs: 20_000,
        what: "the extension's line on the connection gone",
      }).catch((err: Error) => {
        throw new Error(`${err.message}; the server logged:\n${logged}`);
      });
      expect(logged).not.to.match(/Traceback|Uncaught exception|Future exception was never retrieved/);
      const next = await env.ssh(['echo served']);
      expect(next.code, next.stderr).to.equal(0);
      expect(next.stdout.toString()).to.equal('served\n');
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

    it("logs in with a key listed in the server's own ~/.ssh/authorized_keys, read as sshd reads it; a line's command= is applied there", async () => {
      const plain = await newKey(dir, keyName('listed'));
      const forced = await newKey(dir, keyName('forced'));
      listAuthorizedKeys(env.user, [`command="echo forced: $SSH_ORIGINAL_COMMAND" ${publicLine(forced)}`]);
      await ensureServer(env.hub, env.user.name);
      // Put there as users are told to: ssh-copy-id with the token, which runs in the server (it keeps temporary files in the local ~/.ssh).
      const home = fs.mkdtempSync(path.join(dir, 'home-'));
      fs.mkdirSync(path.join(home, '.ssh'), { mode: 0o700 });
      const options = sshOptions(env.proxy.port).filter((o) => o !== '-p' && o !== String(env.proxy.port));
      const copied = await run('ssh-copy-id', ['-i', `${plain}.pub`, '-p', String(env.proxy.port), ...options, `${env.user.name}@127.0.0.1`], {
        env: askpassEnv(env.token, { HOME: home }),
      });
      expect(copied.code, copied.stderr).to.equal(0);
      expect(fs.readFileSync(path.join(env.user.home, '.ssh', 'authorized_keys'), 'utf8')).to.include(publicLine(plain).split(' ')[1]);
      const before = env.proxy.logs().length;
      const listed = await keySsh(plain, ['id', '-un']);
      expect(listed.code, listed.stderr).to.equal(0);
      expect(listed.stdout.toString()).to.equal(`${env.user.name}\n`);
      expect(env.proxy.logs().slice(before)).to.match(/login accepted: user=\S+ server=\S+ owner=\S+ method=publickey key=ssh-ed25519 SHA256:/);
      const withCommand = await keySsh(forced, ['id', '-un']);
      expect(withCommand.code, withCommand.stderr).to.equal(0);
      expect(withCommand.stdout.toString()).to.equal('forced: id -un\n');
      expect((await keySsh(await newKey(dir, keyName('unlisted')), ['true'])).code, 'an unlisted key').to.equal(255);

      // StrictModes, checked in the server: a file others may write lets no one in, and the log says why.
      const file = path.join(env.user.home, '.ssh', 'authorized_keys');
      fs.chmodSync(file, 0o620);
      try {
        const mark = env.proxy.logs().length;
        expect((await keySsh(plain, ['true'])).code, 'a group-writable file').to.equal(255);
        expect(env.proxy.logs().slice(mark)).to.include(`refused, bad ownership or modes for file ${file}`);
      } finally {
        fs.chmodSync(file, 0o600);
      }
      expect((await keySsh(plain, ['true'])).code, 'the file safe again').to.equal(0);
    });

    it('a stopped server: a key read from it before (kept across a reload) starts it, and logs in only if the started server still lists it', async () => {
      const key = await newKey(dir, keyName('kept'));
      listAuthorizedKeys(env.user, [publicLine(key)]);
      await ensureServer(env.hub, env.user.name);
      expect((await keySsh(key, ['true'])).code, 'a login while it runs').to.equal(0);
      // What was read survives a reload (SIGHUP) with the same settings.
      const reloads = env.proxy.logs().split('configuration and host keys reloaded').length;
      env.proxy.child.kill('SIGHUP');
      await waitFor(() => env.proxy.logs().split('configuration and host keys reloaded').length > reloads, { timeoutMs: 10_000, what: 'the reload' });

      await stopServer(env.hub, env.user.name);
      const started = await keySsh(key, ['echo', 'started']);
      expect(started.code, started.stderr).to.equal(0);
      expect(started.stdout.toString()).to.equal('started\n');
      expect(started.stderr).to.include('Your server is not running; starting it...');

      // Removed while the server was stopped: the key still starts it, and logs in to nothing.
      await stopServer(env.hub, env.user.name);
      listAuthorizedKeys(env.user, []);
      const before = env.proxy.logs().length;
      const refused = await keySsh(key, ['true']);
      expect(refused.code).to.equal(255);
      expect(refused.stderr).to.include('Your key is no longer in ~/.ssh/authorized_keys in your server (or its line changed)');
      expect(env.proxy.logs().slice(before)).to.match(/login cannot proceed: the key line read before the server stopped does not let in now/);
      expect((await serverModel(env.hub, env.user.name))?.ready, 'started by the kept key').to.equal(true);

      // What the started server said is kept now: stopped again, the key starts nothing.
      await stopServer(env.hub, env.user.name);
      expect((await keySsh(key, ['true'])).code).to.equal(255);
      expect((await serverModel(env.hub, env.user.name))?.ready ?? false, 'not started').to.equal(false);
      const token = await env.ssh(['true']);
      expect(token.code, token.stderr).to.equal(0);
    });

    it("a stopped server whose keys this daemon never read: the user is told to start it or use their token, and nothing starts", async () => {
      const other = await createUnixUser('w');
      others.push(other);
      await createHubUser(env.hub, other.name);
      const key = await newKey(dir, keyName('never-read'));
      listAuthorizedKeys(other, [publicLine(key)]);
      const refused = await keySsh(key, ['true'], other.name);
      expect(refused.code).to.equal(255);
      expect(refused.stderr).to.include('Key logins read ~/.ssh/authorized_keys in your server, which is not running: start it from JupyterHub, or log in with your token');
      expect((await serverModel(env.hub, other.name))?.ready ?? false).to.equal(false);
      // Once it runs, the key logs in.
      await ensureServer(env.hub, other.name);
      const listed = await keySsh(key, ['id', '-un'], other.name);
      expect(listed.code, listed.stderr).to.equal(0);
      expect(listed.stdout.toString()).to.equal(`${other.name}\n`);
    });

    it('opens a named server (NAME+gpu), created and started on demand, with its key file read there', async () => {
      const login = `${env.user.name}+gpu`;
      const result = await ssh(env.proxy.port, login, env.token, ['echo "$JUPYTERHUB_SERVER_NAME"; echo "$JUPYTERHUB_SERVICE_PREFIX"']);
      expect(result.code, result.stderr).to.equal(0);
      expect(result.stdout.toString()).to.equal(`gpu\n/user/${env.user.name}/gpu/\n`);
      expect(result.stderr).to.include('starting it...');
      const key = await newKey(dir, keyName('named'));
      listAuthorizedKeys(env.user, [publicLine(key)]);
      const listed = await keySsh(key, ['echo "$JUPYTERHUB_SERVER_NAME"'], login);
      expect(listed.code, listed.stderr).to.equal(0);
      expect(listed.stdout.toString()).to.equal('gpu\n');
      await stopServer(env.hub, env.user.name, 'gpu');
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

describe('WebSocketUpstream (lib/websocketupstream.ts): addresses, the raw stream, and what a user reads when the endpoint fails', function () {
  const upstream = (serversUrl: string, frames = false, webSocketAnswerMemoryMs?: number) =>
    new WebSocketUpstream({ serversUrl, serviceToken: 'service-token', timeoutMs: 5000, frames, webSocketAnswerMemoryMs });
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

  /**
   * A stand-in for the extension: answers each upgrade (its request's headers recorded) with `answer`'s
   * headers, then what `after` writes on the connection; what the daemon sends comes to `received`.
   */
  async function upgrading(answer: (req: http.IncomingMessage, accept: string) => string[], after: (socket: net.Socket) => void) {
    const requests: http.IncomingHttpHeaders[] = [];
    const received: Buffer[] = [];
    const server = http.createServer();
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
      requests.push(req.headers);
      const accept = crypto.createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      const hostKey = generateKeyPair('ed25519').public.trim().split(' ').slice(0, 2).join(' ');
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      socket.on('error', () => undefined);
      const head = ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade', `X-SSH-Host-Key: ${hostKey}`, 'X-SSH-User: alice', ...answer(req, accept), '', ''];
      socket.write(head.join('\r\n'));
      after(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
      requests,
      received,
      close: () => {
        server.closeAllConnections();
        server.close();
      },
    };
  }

  for (const together of [false, true]) {
    it(`asks for the raw stream, and relays the bytes after the answer as they are, both ways${together ? " (sshd's first bytes in the answer's packet)" : ''}`, async () => {
      const banner = 'SSH-2.0-OpenSSH_stand-in\r\n';
      const server = await upgrading(
        (_req, accept) => [`Sec-WebSocket-Accept: ${accept}`, 'X-SSH-Proxy-Stream: raw'],
        (socket) => (together ? socket.write(banner) : setTimeout(() => socket.write(banner), 50)),
      );
      try {
        const conn = await upstream(server.url).connect({ hubUser: 'alice', server: '' }, noLog);
        expect(server.requests).to.have.length(1);
        expect(server.requests[0]?.['x-ssh-proxy-stream']).to.equal('raw');
        expect(server.requests[0]?.authorization).to.equal('token service-token');
        expect(conn.username).to.equal('alice');
        // Nothing read past the answer: the connection reads into the shared buffer, for the native relay.
        const got: Buffer[] = [];
        const shared = socketFd(conn.input) !== undefined && takeSharedReads(conn.input, (chunk) => got.push(Buffer.from(chunk)));
        expect(shared).to.equal(!together);
        if (!shared) conn.input.on('data', (chunk: Buffer) => got.push(chunk));
        await waitFor(() => Buffer.concat(got).toString() === banner, { timeoutMs: 5000, what: "the stand-in's first bytes" });
        conn.output.write('SSH-2.0-daemon\r\n');
        await waitFor(() => Buffer.concat(server.received).toString() === 'SSH-2.0-daemon\r\n', { timeoutMs: 5000, what: 'the bytes at the stand-in' });
        conn.close();
      } finally {
        server.close();
      }
    });
  }

  it('opens a WebSocket instead where the extension answers with one (an older extension), and with --websocket-frames from the start', async () => {
    const server = await upgrading((_req, accept) => [`Sec-WebSocket-Accept: ${accept}`], () => undefined);
    try {
      const logged: string[] = [];
      const conn = await upstream(server.url).connect({ hubUser: 'alice', server: '' }, (_level, message) => logged.push(message));
      expect(server.requests.map((headers) => headers['x-ssh-proxy-stream'] ?? 'none')).to.deep.equal(['raw', 'none']);
      expect(logged.join('\n')).to.include('answered with a WebSocket, not the raw stream');
      expect(socketFd(conn.input)).to.equal(undefined);
      conn.close();
      const framed = await upstream(server.url, true).connect({ hubUser: 'alice', server: '' }, noLog);
      expect(server.requests.map((headers) => headers['x-ssh-proxy-stream'] ?? 'none')).to.deep.equal(['raw', 'none', 'none']);
      framed.close();
    } finally {
      server.close();
    }
  });

  it('remembers a server that answered with a WebSocket, per server, and asks it for the raw stream again after a while', async () => {
    const server = await upgrading((_req, accept) => [`Sec-WebSocket-Accept: ${accept}`], () => undefined);
    const asked = () => server.requests.map((headers) => headers['x-ssh-proxy-stream'] ?? 'none');
    try {
      // One upstream lives as long as the daemon: what it learnt serves the next logins.
      const daemon = upstream(server.url);
      (await daemon.connect({ hubUser: 'alice', server: '' }, noLog)).close();
      (await daemon.connect({ hubUser: 'alice', server: '' }, noLog)).close();
      expect(asked()).to.deep.equal(['raw', 'none', 'none']);
      // Another server of the same user may run another image.
      (await daemon.connect({ hubUser: 'alice', server: 'gpu' }, noLog)).close();
      expect(asked()).to.deep.equal(['raw', 'none', 'none', 'raw', 'none']);

      const forgetful = upstream(server.url, false, 20);
      (await forgetful.connect({ hubUser: 'alice', server: '' }, noLog)).close();
      expect(asked().slice(5)).to.deep.equal(['raw', 'none']);
      const remembered = Date.now();
      await waitFor(() => Date.now() - remembered > 40, { timeoutMs: 1000, intervalMs: 10, what: 'the memory to lapse' });
      (await forgetful.connect({ hubUser: 'alice', server: '' }, noLog)).close();
      expect(asked().slice(5)).to.deep.equal(['raw', 'none', 'raw', 'none']);
    } finally {
      server.close();
    }
  });

  it('refuses an upgrade answered without the Sec-WebSocket-Accept of its key', async () => {
    const server = await upgrading(() => ['Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=', 'X-SSH-Proxy-Stream: raw'], () => undefined);
    try {
      const logged: string[] = [];
      const err = await upstream(server.url).connect({ hubUser: 'alice', server: '' }, (_level, message) => logged.push(message)).catch((e: Error) => e);
      expect(err).to.be.instanceOf(UpstreamError);
      expect((err as Error).message).to.equal('Your server refused the SSH connection; ask your JupyterHub administrator');
      expect(logged.join('\n')).to.match(/ws:\/\/127\.0\.0\.1:\d+\/user\/alice\/ssh-proxy\/connect answered the upgrade without the Sec-WebSocket-Accept of its key/);
    } finally {
      server.close();
    }
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
