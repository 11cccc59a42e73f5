// The JupyterHub integration against a real JupyterHub 3.0 and 5.2 (LocalProcessSpawner,
// real unix users), the real daemon, the real OpenSSH client and the real sshd:
// scopes, start on demand with progress, named servers, spawn failures, an
// unresponsive Hub, token revocation, activity for the culler, sessions ended
// by a server stop, managed-service mode, and that no token reaches a log.
import { expect } from 'chai';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { useEnv, type Env, type EnvOptions } from './helpers/fixture.js';
import { DEBIAN_12, DEBIAN_13, HUB_STATE_TIMEOUT_MS, createToken, ensureServer, revokeToken, serverModel, serverPath, stopServer, userModel, type Hub, type HubDistribution, type UserModel } from './helpers/hub.js';
import { metricsOrigin, scrapeMetrics } from './helpers/metrics.js';
import { allProxyLogs, startProxy, type ProxyProcess } from './helpers/proxy.js';
import { keyLoginOptions, run, ssh, type RunResult } from './helpers/ssh.js';
import { newKey, publicLine } from './helpers/sshkeys.js';
import { createUnixUser, listAuthorizedKeys } from './helpers/unixuser.js';
import { waitFor } from './helpers/wait.js';

/** A successful login prints nothing of ssh's own; banners (progress) need the default LogLevel. */
const QUIET = ['-o', 'LogLevel=ERROR'];
/**
 * One token prompt, keyboard-interactive only: a refused token ends the
 * client at once (instead of a second prompt for the password method), and
 * the refusal banner is printed (LogLevel stays INFO).
 */
const ONE_TRY = ['-o', 'NumberOfPasswordPrompts=1', '-o', 'PreferredAuthentications=keyboard-interactive'];

// ---------------------------------------------------------------------------
// Every token and every daemon of this file, for the secrecy check at the end.

const tokensUsed = new Set<string>();
const daemons: ProxyProcess[] = [];

async function mint(hub: Hub, owner: string, scopes?: string[]): Promise<{ token: string; id: string }> {
  const t = await createToken(hub, owner, scopes);
  tokensUsed.add(t.token);
  return t;
}

async function daemon(hubUrl: string | undefined, args: string[] = [], env?: NodeJS.ProcessEnv): Promise<ProxyProcess> {
  const p = await startProxy(hubUrl, args, { env });
  daemons.push(p);
  return p;
}

/** useEnv with a Hub of `distribution`, with its token and daemon registered for the secrecy check. */
function hubEnv(distribution: HubDistribution, options: EnvOptions): Env {
  const env = useEnv({ ...options, hub: { ...options.hub, distribution } });
  before(() => {
    tokensUsed.add(env.token);
    tokensUsed.add(env.hub.serviceToken);
    daemons.push(env.proxy);
  });
  return env;
}

// ---------------------------------------------------------------------------
// Hub state, through the REST API with the test service's token.

/** A Hub user without a unix account (admins, other token owners); removed by the returned function. */
async function extraHubUser(hub: Hub, prefix: string, admin = false): Promise<{ name: string; remove: () => Promise<void> }> {
  const name = `${prefix}-${crypto.randomBytes(4).toString('hex')}`;
  const r = admin ? await hub.api('POST', `/users/${name}`, { admin: true }, hub.adminToken) : await hub.api('POST', `/users/${name}`);
  expect(r.status, JSON.stringify(r.body)).to.equal(201);
  expect((await userModel(hub, name)).admin).to.equal(admin);
  return {
    name,
    remove: async () => {
      const d = await hub.api('DELETE', `/users/${name}`);
      expect([204, 404]).to.include(d.status);
    },
  };
}

// ---------------------------------------------------------------------------
// ssh through a daemon.

function login(proxy: ProxyProcess, user: string, token: string, command: string[], extra: string[] = []): Promise<RunResult> {
  return ssh(proxy.port, user, token, command, extra);
}

function expectLoggedInAs(r: RunResult, unixUser: string): void {
  expect(r.code, `ssh failed:\n${r.stderr}`).to.equal(0);
  expect(r.stdout.toString()).to.equal(`${unixUser}\n`);
}

/** The login was refused: ssh gave up with 255, ran nothing, and its stderr carries `message`. */
function expectRefused(r: RunResult, message: string): void {
  expect(r.code, `expected a refusal, ssh said:\n${r.stderr}`).to.equal(255);
  expect(r.stdout.toString()).to.equal('');
  expect(r.stderr.includes(message), `expected ${JSON.stringify(message)} in ssh's stderr:\n${r.stderr}`).to.equal(true);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ===========================================================================

// Every test against Debian 12's JupyterHub 3.0, and against what current
// deployments run: JupyterHub 5 (Debian 13's, in its root; test/helpers/hub.ts).
for (const distribution of [DEBIAN_12, DEBIAN_13]) describe(`hub: ${distribution.name}`, function () {
  describe('authorization by access:servers scopes', function () {
    const env = hubEnv(distribution, { hub: { namedServers: true } });

    const cleanups: (() => Promise<unknown>)[] = [];
    afterEach(async () => {
      for (const undo of cleanups.splice(0).reverse()) await undo();
    });

    // With the default --hub-timeout. Among the unresponsive-Hub tests, with
    // 2 s, this failed once in CI: the start-up request to a Hub that has just
    // started may take longer on a loaded machine, and the daemon then rightly
    // logs that the Hub does not answer.
    it("logs the Hub's version at start when the Hub answers", async function () {
      const line = /JupyterHub \d+\.\d+\.\d+\S* answers at http:\/\/127\.0\.0\.1:\d+\/hub\/api/;
      await waitFor(() => line.test(env.proxy.logs()), { timeoutMs: 10_000, what: "the Hub's version in the log" });
      expect(/JupyterHub (\S+) answers/.exec(env.proxy.logs())![1]).to.match(distribution.version);
    });

    it("the user's own default token opens the user's own server", async function () {
      const r = await login(env.proxy, env.user.name, env.token, ['id -un'], QUIET);
      expectLoggedInAs(r, env.user.name);
      expect((await serverModel(env.hub, env.user.name))?.ready).to.equal(true);
    });

    it('a token without access:servers is refused, naming the missing scope', async function () {
      const { token } = await mint(env.hub, env.user.name, [`read:users:name!user=${env.user.name}`]);
      const r = await login(env.proxy, env.user.name, token, ['id -un'], ONE_TRY);
      expectRefused(r, `lacks the scope access:servers!server=${env.user.name}/ `);
      expect(r.stderr).to.include(`The token of JupyterHub user '${env.user.name}'`);
      expect(r.stderr, 'no pointer to a login the token already names').not.to.include('own server');
      expect(r.stderr).to.include('Permission denied');
    });

    it("an admin's token logs in as another user, into that user's unix account", async function () {
      const admin = await extraHubUser(env.hub, 'adm', true);
      cleanups.push(admin.remove);
      const { token } = await mint(env.hub, admin.name);
      const r = await login(env.proxy, env.user.name, token, ['id -un'], QUIET);
      expectLoggedInAs(r, env.user.name);
      expect(env.proxy.logs()).to.match(
        new RegExp(`login accepted: user=${escapeRegExp(env.user.name)} server=${escapeRegExp(env.user.name)}/ owner=${escapeRegExp(admin.name)}`),
      );
    });

    it("a non-admin's token is refused for another user's server", async function () {
      const other = await extraHubUser(env.hub, 'carol');
      cleanups.push(other.remove);
      const { token } = await mint(env.hub, other.name);
      const r = await login(env.proxy, env.user.name, token, ['id -un'], ONE_TRY);
      expectRefused(r, `The token of JupyterHub user '${other.name}' lacks the scope access:servers!server=${env.user.name}/ `);
    });

    describe('a token restricted to one named server', function () {
      let token: string;
      before(async function () {
        const n = env.user.name;
        // access:servers is what the check needs; servers and read:servers on
        // the same server are what a user's token needs to start it (there is
        // no service token in this describe).
        token = (await mint(env.hub, n, [`access:servers!server=${n}/gpu`, `servers!server=${n}/gpu`, `read:servers!server=${n}/gpu`])).token;
      });

      it('opens NAME+gpu (starting it)', async function () {
        await stopServer(env.hub, env.user.name, 'gpu');
        const r = await login(env.proxy, `${env.user.name}+gpu`, token, ['id -un'], QUIET);
        expectLoggedInAs(r, env.user.name);
        expect((await serverModel(env.hub, env.user.name, 'gpu'))?.ready).to.equal(true);
      });

      it('opens NAME+gpu again while that server runs', async function () {
        await ensureServer(env.hub, env.user.name, 'gpu');
        const r = await login(env.proxy, `${env.user.name}+gpu`, token, ['id -un'], QUIET);
        expectLoggedInAs(r, env.user.name);
      });

      it('is refused for the default server NAME', async function () {
        const r = await login(env.proxy, env.user.name, token, ['id -un'], ONE_TRY);
        expectRefused(r, `lacks the scope access:servers!server=${env.user.name}/ `);
      });

      it('is refused for another named server NAME+other', async function () {
        const r = await login(env.proxy, `${env.user.name}+other`, token, ['id -un'], ONE_TRY);
        expectRefused(r, `lacks the scope access:servers!server=${env.user.name}/other `);
        // The refusal came before anything was created.
        expect(await serverModel(env.hub, env.user.name, 'other')).to.equal(undefined);
      });
    });
  });

  describe('start on demand, with progress', function () {
    const env = hubEnv(distribution, { hub: { namedServers: true } });

    it('starts a stopped server and shows each step on the client', async function () {
      await stopServer(env.hub, env.user.name);
      expect(await serverModel(env.hub, env.user.name)).to.equal(undefined);
      // Default LogLevel: ssh prints the banners.
      const r = await env.ssh(['id -un']);
      expectLoggedInAs(r, env.user.name);
      expect(r.stderr).to.include('Your server is not running; starting it');
      expect(r.stderr).to.include('Server requested');
      expect(r.stderr).to.include('Spawning server');
      // In order, as the Hub sent them.
      const order = ['not running; starting it', 'Server requested', 'Spawning server'].map((s) => r.stderr.indexOf(s));
      expect(order).to.deep.equal([...order].sort((a, b) => a - b));
      const s = await serverModel(env.hub, env.user.name);
      expect(s?.ready).to.equal(true);
      expect(s?.pending).to.equal(null);
    });

    it('a running server is used as it is: no start, no progress', async function () {
      const before = await ensureServer(env.hub, env.user.name);
      const r = await env.ssh(['id -un']);
      expectLoggedInAs(r, env.user.name);
      expect(r.stderr).not.to.include('starting it');
      expect((await serverModel(env.hub, env.user.name))?.started).to.equal(before.started);
    });

    it('creates and starts a named server on demand (NAME+gpu)', async function () {
      await env.hub.api('DELETE', serverPath(env.user.name, 'gpu'), { remove: true });
      await waitFor(async () => (await serverModel(env.hub, env.user.name, 'gpu')) === undefined, {
        timeoutMs: HUB_STATE_TIMEOUT_MS,
        what: 'no server gpu',
      });
      const r = await ssh(env.proxy.port, `${env.user.name}+gpu`, env.token, ['id -un']);
      expectLoggedInAs(r, env.user.name);
      expect(r.stderr).to.include("Your server 'gpu' is not running; starting it");
      const gpu = (await userModel(env.hub, env.user.name)).servers?.gpu;
      expect(gpu?.name).to.equal('gpu');
      expect(gpu?.ready).to.equal(true);
    });
  });

  describe('logins while the server is being started', function () {
    // A single-user server that takes over 3 s to start, so that its spawn is
    // still pending while the logins arrive.
    const env = hubEnv(distribution, {
      hub: { spawnerCmd: ['/bin/sh', '-c', 'sleep 3; exec /usr/bin/jupyterhub-singleuser "$@"', 'jupyterhub-singleuser'] },
    });

    /** Requests to start NAME's default server that reached the Hub, from its log. */
    function startRequests(name: string): number {
      const log = fs.readFileSync(path.join(env.hub.dir, 'hub.log'), 'utf8');
      return (log.match(new RegExp(`POST /hub/api/users/${escapeRegExp(name)}/server[ ?]`, 'g')) ?? []).length;
    }

    it('10 simultaneous logins to a stopped server all get in, with one start', async function () {
      await stopServer(env.hub, env.user.name);
      const before = startRequests(env.user.name);
      const results = await Promise.all(Array.from({ length: 10 }, () => env.ssh(['id -un'])));
      for (const r of results) {
        expectLoggedInAs(r, env.user.name);
        // Every login is shown the start it waited for.
        expect(r.stderr).to.include('Your server is not running; starting it');
        expect(r.stderr).to.include('Spawning server');
      }
      expect(startRequests(env.user.name) - before).to.equal(1);
    });

    it('a login while a start begun elsewhere is under way waits for that start', async function () {
      await stopServer(env.hub, env.user.name);
      const before = startRequests(env.user.name);
      // Started through the API, as the Hub's home page does.
      const post = env.hub.api('POST', serverPath(env.user.name, ''), {});
      await waitFor(async () => (await serverModel(env.hub, env.user.name))?.pending === 'spawn', {
        timeoutMs: HUB_STATE_TIMEOUT_MS,
        intervalMs: 50,
        what: 'the spawn to be pending',
      });
      const r = await env.ssh(['id -un']);
      expectLoggedInAs(r, env.user.name);
      expect(r.stderr).to.include('Your server is starting; waiting for it');
      expect([201, 202]).to.include((await post).status);
      // Only the API's own request: the proxy did not ask for a second start.
      expect(startRequests(env.user.name) - before).to.equal(1);
    });
  });

  describe('--no-create-named-servers', function () {
    const env = hubEnv(distribution, { hub: { namedServers: true }, proxyArgs: ['--no-create-named-servers'] });

    it('refuses a named server that does not exist, and creates nothing', async function () {
      const r = await ssh(env.proxy.port, `${env.user.name}+nope`, env.token, ['id -un']);
      expectRefused(r, `You have no server named 'nope'; create it at ${env.hub.url}/hub/home`);
      expect((await userModel(env.hub, env.user.name)).servers?.nope).to.equal(undefined);
    });

    it('still opens a named server that exists', async function () {
      // Created (and started) the way the Hub's UI does, then stopped: it exists but is not running.
      await ensureServer(env.hub, env.user.name, 'made');
      await stopServer(env.hub, env.user.name, 'made');
      const all = await env.hub.api<UserModel>('GET', `/users/${env.user.name}?include_stopped_servers`);
      expect(all.body.servers?.made, 'the Hub has server made, stopped').to.include({ ready: false, pending: null, stopped: true });
      const r = await ssh(env.proxy.port, `${env.user.name}+made`, env.token, ['id -un']);
      expectLoggedInAs(r, env.user.name);
      expect(r.stderr).to.include("Your server 'made' is not running; starting it");
    });
  });

  describe('a Hub without named servers', function () {
    const env = hubEnv(distribution, { hub: { namedServers: false } });

    it('answers NAME+gpu with "has no named servers"', async function () {
      const r = await ssh(env.proxy.port, `${env.user.name}+gpu`, env.token, ['id -un']);
      expectRefused(r, `This JupyterHub has no named servers; log in as '${env.user.name}'`);
    });

    it('still opens the default server', async function () {
      const r = await env.ssh(['id -un'], QUIET);
      expectLoggedInAs(r, env.user.name);
    });
  });

  describe('a spawn that fails', function () {
    // The single-user "server" is /bin/false: it exits at once. The Hub notices
    // when its POST stops waiting (slow_spawn_timeout) and answers 500 "Spawner
    // failed to start [status=1]"; it gives up on the server itself after
    // http_timeout. Both are shortened from 10 s and 30 s to keep the test quick.
    const env = hubEnv(distribution, {
      hub: {
        namedServers: true,
        spawnerCmd: ['/bin/false'],
        extraConfig: "c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 2}\nc.Spawner.http_timeout = 4\n",
      },
    });

    it('gives "failed to start" with the Hub\'s message, twice, and the daemon keeps serving', async function () {
      const attempt = async () => {
        const started = Date.now();
        const r = await env.ssh(['id -un']);
        expectRefused(r, 'Your server failed to start: ');
        expect(r.stderr).to.include('Spawner failed to start [status=1]');
        expect(Date.now() - started, 'a refusal, not a hang').to.be.below(30_000);
        // The Hub gives up on the spawn (and the server) a little later.
        await stopServer(env.hub, env.user.name);
        return /Your server failed to start: .*$/m.exec(r.stderr)![0];
      };
      const first = await attempt();
      const second = await attempt();
      expect(second).to.equal(first);
      expect(env.proxy.child.exitCode).to.equal(null);
      expect(env.proxy.child.signalCode).to.equal(null);
      expect(env.proxy.logs()).not.to.match(/unexpectedly|uncaught|unhandled/i);
    });
  });

  describe('an unresponsive Hub', function () {
    const env = hubEnv(distribution, { hub: { namedServers: true }, proxyArgs: ['--hub-timeout', '2'] });

    /** The pid in one of the hub fixture's pid files, checked to be the process we mean. */
    function pidOf(file: string, command: RegExp): number {
      const pid = Number(fs.readFileSync(path.join(env.hub.dir, file), 'utf8').trim());
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      expect(cmdline, `${file} -> ${pid}`).to.match(command);
      return pid;
    }

    it('says "JupyterHub is unavailable, try again later", then serves again once the Hub is back', async function () {
      // A Hub that hangs, for real: SIGSTOP freezes JupyterHub and its
      // configurable-http-proxy (the daemon talks to the Hub's public URL, i.e.
      // through that proxy). Their sockets stay open, so connections are
      // accepted by the kernel and then never answered: the daemon's requests
      // run into --hub-timeout (the worst case: no quick ECONNREFUSED).
      // SIGCONT brings back exactly the same Hub (same ports, database and
      // tokens), which a kill and restart could not guarantee; the finally
      // below sends it whatever happens.
      const hubPid = pidOf('jupyterhub.pid', /jupyterhub/);
      const chpPid = pidOf('jupyterhub-proxy.pid', /configurable-http-proxy/);
      // A token the daemon has never seen, so no cached verdict can answer for the Hub.
      const { token } = await mint(env.hub, env.user.name);
      let r: RunResult;
      const stoppedAt = Date.now();
      process.kill(chpPid, 'SIGSTOP');
      process.kill(hubPid, 'SIGSTOP');
      try {
        r = await login(env.proxy, env.user.name, token, ['id -un'], ONE_TRY);
      } finally {
        process.kill(hubPid, 'SIGCONT');
        process.kill(chpPid, 'SIGCONT');
      }
      expectRefused(r, 'JupyterHub is unavailable, try again later');
      // It was --hub-timeout (2 s) that answered, not a crash.
      expect(Date.now() - stoppedAt).to.be.above(2000);
      expect(env.proxy.logs()).to.match(/JupyterHub request GET \S+ failed: ETIMEDOUT/);
      expect(env.proxy.child.exitCode).to.equal(null);

      // Once the Hub answers again, the very next login with the same token works.
      await waitFor(async () => (await env.hub.api('GET', '/user')).status === 200, {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: 'the Hub to answer after SIGCONT',
      });
      expectLoggedInAs(await login(env.proxy, env.user.name, token, ['id -un'], QUIET), env.user.name);
    });

    it('given an address that redirects (an HTTPS redirect, a front proxy), says so at start and in the log, and tells the user the Hub is unavailable', async function () {
      // What TLJH's traefik does on port 80 with HTTPS on: send everything to
      // the public name. Here: to the real Hub under another host name.
      const front = http.createServer((req, res) => {
        res.statusCode = 301;
        res.setHeader('location', `${env.hub.url.replace('127.0.0.1', 'localhost')}${req.url}`);
        res.end();
      });
      await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
      const frontUrl = `http://127.0.0.1:${(front.address() as AddressInfo).port}`;
      const proxy = await daemon(frontUrl);
      try {
        const warning = await waitFor(() => proxy.logLine('JupyterHub does not answer at'), {
          timeoutMs: 10_000,
          what: 'the start-up check of the Hub address',
        });
        expect(warning).to.include(`${frontUrl}/hub/api answered GET /version with a redirect (HTTP 301) to ${env.hub.url.replace('127.0.0.1', 'localhost')}/hub/api/`);
        const { token } = await mint(env.hub, env.user.name);
        expectRefused(await login(proxy, env.user.name, token, ['id -un'], ONE_TRY), 'JupyterHub is unavailable, try again later');
        expect(proxy.logs()).to.include('answered GET /user with a redirect (HTTP 301)');
        expect(proxy.logs()).to.include('http://127.0.0.1:15001');
      } finally {
        await proxy.stop();
        front.closeAllConnections();
        await new Promise((resolve) => front.close(resolve));
      }
    });
  });

  describe('token revocation and the cache TTL', function () {
    const TTL_MS = 2000;
    const env = hubEnv(distribution, { hub: { namedServers: true }, proxyArgs: ['--auth-cache-ttl', String(TTL_MS / 1000)] });

    it('a revoked token is refused after at most --auth-cache-ttl, and from then on', async function () {
      await ensureServer(env.hub, env.user.name);
      const { token, id } = await mint(env.hub, env.user.name);
      expectLoggedInAs(await login(env.proxy, env.user.name, token, ['id -un'], QUIET), env.user.name);

      await revokeToken(env.hub, env.user.name, id);
      const revokedAt = Date.now();
      // The token itself is dead at the Hub.
      expect((await env.hub.api('GET', '/user', undefined, token)).status).to.equal(403);

      // Try until an attempt that began after the TTL has finished (a cached
      // verdict can answer before that, never after).
      const attempts: { start: number; end: number; r: RunResult }[] = [];
      await waitFor(
        async () => {
          const start = Date.now();
          const r = await login(env.proxy, env.user.name, token, ['id -un'], ONE_TRY);
          attempts.push({ start, end: Date.now(), r });
          return start > revokedAt + TTL_MS;
        },
        { timeoutMs: TTL_MS + 20_000, intervalMs: 0, what: 'an attempt after the cache TTL' },
      );
      const summary = attempts.map((a) => `+${a.start - revokedAt}ms: ${a.r.code}`).join(', ');
      for (const a of attempts) {
        if (a.r.code === 0) {
          // Only the cache can have let it in, so only within the TTL.
          expect(a.start - revokedAt, `accepted too late (${summary})`).to.be.at.most(TTL_MS);
        } else {
          expectRefused(a.r, 'JupyterHub did not accept that token (unknown, expired or revoked)');
        }
      }
      const firstRefusal = attempts.find((a) => a.r.code !== 0);
      expect(firstRefusal, summary).not.to.equal(undefined);
      // Refused by the TTL plus one attempt's time.
      expect(firstRefusal!.end - revokedAt, summary).to.be.at.most(TTL_MS + 3000);
      // ...and after: never accepted again.
      expectRefused(await login(env.proxy, env.user.name, token, ['id -un'], ONE_TRY), 'did not accept that token');
    });
  });

  describe('activity and server stops, while a session runs', function () {
    const env = hubEnv(distribution, {
      hub: { namedServers: true },
      proxyArgs: ['--activity-interval', '1', '--server-poll-interval', '1', '--metrics-ip', '127.0.0.1', '--metrics-port', '0'],
    });

    /**
     * Waits, while `ended()` is false, for the server's last_activity to pass
     * `since`, and returns it. Only the daemon's reports can be more recent
     * than a session's start: what the Hub and the single-user server record
     * of the start is older.
     */
    function activityAfter(since: number, ended: () => boolean, timeoutMs: number): Promise<number> {
      return waitFor(
        async () => {
          if (ended()) throw new Error('the session ended first');
          const s = await serverModel(env.hub, env.user.name);
          const at = s?.last_activity ? Date.parse(s.last_activity) : 0;
          return at > since ? at : undefined;
        },
        { timeoutMs, intervalMs: 250, what: `last_activity after ${new Date(since).toISOString()}` },
      );
    }

    it("posts activity: the server's last_activity passes the session start while data moves", async function () {
      const server = await ensureServer(env.hub, env.user.name);
      const sessionStart = Date.now();
      expect(Date.parse(server.last_activity!)).to.be.below(sessionStart);
      let ended = false;
      // About 10 s of output, half a second apart: traffic in every activity interval.
      const session = env.ssh(['for i in $(seq 1 20); do echo tick; sleep 0.5; done'], QUIET).finally(() => (ended = true));
      const seen = await activityAfter(sessionStart, () => ended, 9000).finally(() => session);
      expect(seen).to.be.at.most(Date.now());
      const r = await session;
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout.toString().split('\n').filter((l) => l === 'tick')).to.have.length(20);
      expect(env.proxy.logs()).to.include('activity reported to JupyterHub');
    });

    it("posts activity for a silent session too: sshd's check that the client is still there (ClientAliveInterval) counts, so a quiet job keeps its server", async function () {
      // 1 s instead of the internal sshd's 60, to see it within the test.
      const proxy = await daemon(env.hub.url, ['--activity-interval', '1', '--sshd-option', 'ClientAliveInterval=1']);
      try {
        await ensureServer(env.hub, env.user.name);
        let output = '';
        let ended = false;
        const session = ssh(proxy.port, env.user.name, env.token, ['echo started; sleep 9; echo done'], QUIET, {
          onSpawn: (child) => child.stdout!.on('data', (c: Buffer) => (output += c.toString())),
        }).finally(() => (ended = true));
        try {
          await waitFor(() => output.includes('started'), { timeoutMs: 30_000, what: 'the session to start' });
          // The login and "started" are reported within an interval (1 s) of
          // it; a report from 2.5 s on can only come from the silence after.
          await activityAfter(Date.now() + 2500, () => ended, 6000);
        } finally {
          const r = await session;
          expect(r.stdout.toString(), r.stderr).to.equal('started\ndone\n');
        }
      } finally {
        await proxy.stop();
      }
    });

    it('three sessions on one server, the last opened after a SIGHUP reload: one Hub poll per interval between them, and a stop ends all three', async function () {
      await ensureServer(env.hub, env.user.name);
      const outs = ['', '', ''];
      let ended = 0;
      const open = (i: number) => {
        const session = ssh(env.proxy.port, env.user.name, env.token, ['echo started; exec sleep 60'], [], {
          onSpawn: (child) => {
            child.stdin!.end();
            child.stdout!.on('data', (c: Buffer) => (outs[i] += c.toString()));
          },
          timeoutMs: 90_000,
        });
        void session.finally(() => ended++).catch(() => undefined);
        return session;
      };
      const running = (n: number) =>
        waitFor(
          () => {
            if (ended > 0) throw new Error('a session ended before all had started');
            return outs.slice(0, n).every((o) => o.includes('started'));
          },
          { timeoutMs: 30_000, what: `${n} sessions to run` },
        );
      const sessions = [open(0), open(1)];
      await running(2);
      // A reload with unchanged Hub settings keeps the watches: the third
      // session joins the first two's watch instead of starting a second one.
      const reloads = env.proxy.logs().split('configuration and host keys reloaded').length;
      env.proxy.child.kill('SIGHUP');
      await waitFor(() => env.proxy.logs().split('configuration and host keys reloaded').length > reloads, { timeoutMs: 10_000, what: 'the reload' });
      sessions.push(open(2));
      await running(3);

      // GET /users/NAME calls, from the daemon's metrics: only the watch makes them now.
      const origin = metricsOrigin(env.proxy.logs());
      if (!origin) throw new Error(`no metrics address in the log:\n${env.proxy.logs()}`);
      const polls = async () => (await scrapeMetrics(origin)).get('jupyter_ssh_proxy_hub_request_duration_seconds_count{endpoint="users"}') ?? NaN;
      const p0 = await polls();
      const t0 = Date.now();
      await waitFor(async () => (await polls()) >= p0 + 5, { timeoutMs: 15_000, intervalMs: 50, what: 'five more polls' });
      const fivePolls = Date.now() - t0;
      // One watch polls every second: five polls take 4-5 s. Two watches (one
      // from before the reload, one after) would make them in 2-2.5 s, one
      // watch per session in under 2.
      expect(fivePolls, `${fivePolls} ms for five polls`).to.be.at.least(3500);

      const stopAt = Date.now();
      const d = await env.hub.api('DELETE', serverPath(env.user.name, ''));
      expect([202, 204]).to.include(d.status);
      const results = await Promise.all(sessions);
      const elapsed = Date.now() - stopAt;
      for (const r of results) {
        expect(r.code).to.equal(255);
        expect(r.stderr).to.include('Your JupyterHub server was stopped, so this SSH session ends');
      }
      // One poll interval (1 s), plus the Hub's stop and the goodbye.
      expect(elapsed, `${elapsed} ms`).to.be.below(1000 + 5000);
    });
  });

  describe('key logins (--authorized-keys-file): the Hub asked with the service token', function () {
    const env = hubEnv(distribution, { hub: { namedServers: true }, proxyArgs: ['--authorized-keys-file', '.ssh/authorized_keys'], serviceToken: true });
    let keys: string;
    before(() => {
      keys = fs.mkdtempSync(path.join(os.tmpdir(), 'jsp-hubkeys-'));
    });
    after(() => fs.rmSync(keys, { recursive: true, force: true }));
    const keySsh = (keyFile: string, command: string[], login = env.user.name) => run('ssh', [...keyLoginOptions(env.proxy.port, keyFile), `${login}@127.0.0.1`, ...command]);

    it("a listed key starts the stopped server, and opens it and a named server NAME+gpu it creates", async function () {
      const keyFile = await newKey(keys, `key-${crypto.randomBytes(3).toString('hex')}`);
      listAuthorizedKeys(env.user, [publicLine(keyFile)]);
      await stopServer(env.hub, env.user.name);
      const r = await keySsh(keyFile, ['id -un']);
      expectLoggedInAs(r, env.user.name);
      expect(r.stderr).to.include('Your server is not running; starting it');
      expect((await serverModel(env.hub, env.user.name))?.ready).to.equal(true);
      const named = await keySsh(keyFile, ['id -un'], `${env.user.name}+gpu`);
      expectLoggedInAs(named, env.user.name);
      expect((await serverModel(env.hub, env.user.name, 'gpu'))?.ready).to.equal(true);
    });

    it('tells a key holder in one line when the Hub has no such user', async function () {
      const keyFile = await newKey(keys, `gone-${crypto.randomBytes(3).toString('hex')}`);
      const gone = await createUnixUser('kg');
      try {
        listAuthorizedKeys(gone, [publicLine(keyFile)]);
        const r = await keySsh(keyFile, ['true'], gone.name);
        expect(r.code).to.equal(255);
        expect(r.stderr).to.include(`JupyterHub has no user '${gone.name}'`);
      } finally {
        await gone.remove();
      }
    });
  });

  describe('managed-service mode (JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN)', function () {
    // env.proxy: the same Hub with no service token (URL argument only).
    const env = hubEnv(distribution, { hub: { namedServers: true } });
    let managed: ProxyProcess;
    const cleanups: (() => Promise<unknown>)[] = [];
    before(async function () {
      managed = await daemon(undefined, [], {
        JUPYTERHUB_API_URL: `${env.hub.url}/hub/api`,
        JUPYTERHUB_API_TOKEN: env.hub.serviceToken,
      });
    });
    after(async () => managed?.stop());
    afterEach(async () => {
      for (const undo of cleanups.splice(0).reverse()) await undo();
    });

    it('starts without a URL argument and logs users in', async function () {
      expect(managed.logs()).to.include(`JupyterHub API at ${env.hub.url}/hub/api`);
      expect(managed.logs()).not.to.include('no JUPYTERHUB_API_TOKEN');
      const r = await login(managed, env.user.name, env.token, ['id -un'], QUIET);
      expectLoggedInAs(r, env.user.name);
    });

    it("access:servers!group=G lets an admin's token log in as a member of G (group looked up with the service token)", async function () {
      const admin = await extraHubUser(env.hub, 'adm', true);
      cleanups.push(admin.remove);
      // The admin manages groups with its own token (the test service may not).
      const adminToken = (await mint(env.hub, admin.name)).token;
      const group = `g-${crypto.randomBytes(4).toString('hex')}`;
      const otherGroup = `h-${crypto.randomBytes(4).toString('hex')}`;
      for (const g of [group, otherGroup]) {
        const made = await env.hub.api('POST', `/groups/${g}`, undefined, adminToken);
        expect(made.status, JSON.stringify(made.body)).to.equal(201);
        cleanups.push(async () => expect([204, 404]).to.include((await env.hub.api('DELETE', `/groups/${g}`, undefined, adminToken)).status));
      }
      const add = await env.hub.api('POST', `/groups/${group}/users`, { users: [env.user.name] }, adminToken);
      expect(add.status, JSON.stringify(add.body)).to.equal(200);
      expect((await userModel(env.hub, env.user.name)).groups).to.deep.equal([group]);

      const inGroup = await mint(env.hub, admin.name, [`access:servers!group=${group}`]);
      const r = await login(managed, env.user.name, inGroup.token, ['id -un'], QUIET);
      expectLoggedInAs(r, env.user.name);

      // A group the user is not in grants nothing.
      const notInGroup = await mint(env.hub, admin.name, [`access:servers!group=${otherGroup}`]);
      const refused = await login(managed, env.user.name, notInGroup.token, ['id -un'], ONE_TRY);
      expectRefused(refused, `The token of JupyterHub user '${admin.name}' lacks the scope access:servers!server=${env.user.name}/ `);
    });

    describe('a token with access:servers but not the servers scope', function () {
      let token: string;
      before(async function () {
        token = (await mint(env.hub, env.user.name, [`access:servers!user=${env.user.name}`])).token;
      });

      it('starts a stopped server with it, using the service token', async function () {
        await stopServer(env.hub, env.user.name);
        const r = await login(managed, env.user.name, token, ['id -un']);
        expectLoggedInAs(r, env.user.name);
        expect(r.stderr).to.include('Your server is not running; starting it');
        expect((await serverModel(env.hub, env.user.name))?.ready).to.equal(true);
      });

      it('without a service token, the same token gets the message about the servers scope', async function () {
        await stopServer(env.hub, env.user.name);
        const r = await login(env.proxy, env.user.name, token, ['id -un']);
        expectRefused(r, 'Your token may not start servers (it needs the servers scope)');
        expect(await serverModel(env.hub, env.user.name)).to.equal(undefined);
      });
    });
  });
});

describe('hub: token secrecy', function () {
  it('no token used in this file appears in any daemon log', function () {
    expect(daemons.length, 'daemons started').to.be.above(0);
    expect(tokensUsed.size, 'tokens used').to.be.above(0);
    const logs = [...daemons.map((d) => d.logs()), allProxyLogs.join('')];
    expect(logs.join('').length).to.be.above(0);
    for (const token of tokensUsed) {
      // The whole token, and its first half (a truncated token is still a leak).
      for (const needle of [token, token.slice(0, Math.ceil(token.length / 2))]) {
        for (const log of logs) expect(log.includes(needle), `a token (${needle.length} chars) is in a daemon log`).to.equal(false);
      }
    }
  });
});
