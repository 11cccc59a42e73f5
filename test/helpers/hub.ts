// Test fixture: a real JupyterHub (Debian 12's jupyterhub 3.0 package, or
// Debian 13's 5.2 in a root file system of its own) with DummyAuthenticator +
// LocalProcessSpawner, running in a throw-away directory.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { httpStatus, type TlsFiles } from './tls.js';
import { freePorts, waitFor } from './wait.js';

export interface Hub {
  /** Public URL (through configurable-http-proxy), e.g. http://127.0.0.1:PORT */
  url: string;
  /** Token of a service with an admin-ish role (see SERVICE_SCOPES). */
  serviceToken: string;
  /** Token of a service with JupyterHub's admin role, for what only admins may do (since JupyterHub 4: make admins). */
  adminToken: string;
  /** The hub's temp dir (config, sqlite db, cookie secret, log). */
  dir: string;
  /** Calls the REST API; `path` is relative to /hub/api. Uses serviceToken unless `token` is given. */
  api<T = unknown>(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: T }>;
  /** Kills the hub, its proxy and all single-user servers, removes the dir. Idempotent. */
  stop(): Promise<void>;
}

/** A Debian release whose JupyterHub (and single-user server, and sshd there) the tests run. */
export interface HubDistribution {
  name: string;
  /** Its root file system, made by scripts/install-deps.sh --test; none for the machine's own. */
  root?: string;
  /** JupyterHub's version there, and /etc/debian_version's. */
  version: RegExp;
  debianVersion: RegExp;
}

export const DEBIAN_12: HubDistribution = { name: "Debian 12's JupyterHub 3.0", version: /^3\.0\./, debianVersion: /^12\./ };

/**
 * What current deployments run: JupyterHub 5.2, jupyter_server 2.15 in the
 * single-user servers, OpenSSH 10.0, Python 3.13. The Hub runs chrooted, in
 * a mount namespace that sees the machine's accounts, /home and /tmp, as a
 * container would see volumes: its servers, their sessions and their
 * extension's sshd all run from Debian 13's files.
 */
export const DEBIAN_13: HubDistribution = {
  name: "Debian 13's JupyterHub 5.2, jupyter_server 2.15 and OpenSSH 10 in a root of their own",
  root: '/opt/jupyter-ssh-proxy-test/debian-13',
  version: /^5\./,
  debianVersion: /^13\./,
};

/**
 * Runs `$3...` chrooted in `$1`, in directory `$2`. The mounts live in this
 * private mount namespace only, and go with its last process. /etc is the
 * machine's read-only at /.host-etc, where the root's passwd, group, shadow,
 * gshadow and hosts link to (scripts/install-deps.sh): users made while the
 * Hub runs are seen at once.
 */
const IN_ROOT = [
  'root=$1 cwd=$2; shift 2',
  'mount --bind -o ro /etc "$root/.host-etc"',
  'for dir in /proc /sys /dev /home /tmp; do mount --rbind "$dir" "$root$dir"; done',
  `exec chroot "$root" sh -c 'cd "$1" && shift && exec "$@"' sh "$cwd" "$@"`,
].join('\n');

export interface HubOptions {
  /** The machine's own JupyterHub (DEBIAN_12) unless given. */
  distribution?: HubDistribution;
  namedServers?: boolean;
  /** Replaces Spawner.cmd (default ['/usr/bin/jupyterhub-singleuser']). */
  spawnerCmd?: string[];
  /** Python appended verbatim to jupyterhub_config.py. */
  extraConfig?: string;
  /** Serves the public URL over https with this certificate (JupyterHub's ssl_cert and ssl_key: its proxy terminates TLS). */
  tls?: TlsFiles;
}

export const SERVICE_NAME = 'jsp-test';
export const SERVICE_SCOPES = [
  'admin:users',
  'admin:servers',
  'read:users',
  'users:activity',
  'tokens',
  'access:servers',
  'read:servers',
];

const JUPYTERHUB_BIN = process.env.JUPYTERHUB_BIN ?? 'jupyterhub';
const STARTUP_TIMEOUT_MS = 60_000;
// The hub's SIGTERM handler stops every single-user server (cleanup_servers)
// and the proxy; LocalProcessSpawner gives each server up to ~5 s + 5 s.
const STOP_GRACE_MS = 20_000;
const API_TIMEOUT_MS = 60_000;
const LOG_TAIL_LINES = 40;
const MARKER_VAR = 'JSP_TEST_HUB_ID';

/** Hubs not yet stopped, so an abrupt process exit can still kill them. */
const liveHubs = new Map<string, { pid: number | undefined; dir: string; marker: string }>();
let exitHookInstalled = false;

/** Renders a JS value as a Python literal (JSON strings are valid Python strings). */
function py(v: unknown): string {
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (v === null || v === undefined) return 'None';
  if (Array.isArray(v)) return `[${v.map(py).join(', ')}]`;
  if (typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `${JSON.stringify(k)}: ${py(x)}`)
      .join(', ')}}`;
  }
  return JSON.stringify(v);
}

function tail(file: string, n: number): string {
  try {
    const lines = fs.readFileSync(file, 'utf8').replace(/\n$/, '').split('\n');
    return lines.slice(-n).join('\n');
  } catch (err) {
    return `(no log: ${(err as Error).message})`;
  }
}

function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    // Negative pid = the whole process group; the hub leads its own group
    // because it was spawned with detached: true.
    process.kill(-pid, sig);
  } catch {
    // ESRCH: group already gone.
  }
}

/**
 * PIDs of processes carrying this hub's marker in their environment. The proxy
 * and the single-user servers are started by JupyterHub with
 * start_new_session=True, so they are NOT in the hub's process group; the
 * marker (inherited by the proxy from the hub's env, given to servers via
 * Spawner.environment, and inherited by kernels/terminals) finds them anyway.
 * Zombies have an empty environ and are therefore (correctly) not reported.
 * `variable` names another marker variable (the demo's test tags the demo's
 * whole environment with one of its own).
 */
export function markedPids(marker: string, variable: string = MARKER_VAR): number[] {
  const needle = `${variable}=${marker}`;
  const found: number[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return found; // not Linux: nothing more we can do
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      const env = fs.readFileSync(`/proc/${e}/environ`, 'latin1');
      if (env.split('\0').includes(needle)) found.push(pid);
    } catch {
      // Exited meanwhile, or not ours to read.
    }
  }
  return found;
}

function killPids(pids: number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if a test run dies without calling stop(): only synchronous
  // work is possible in 'exit', so SIGKILL everything and remove the dirs.
  process.on('exit', () => {
    for (const h of liveHubs.values()) {
      killGroup(h.pid, 'SIGKILL');
      killPids(markedPids(h.marker), 'SIGKILL');
      try {
        fs.rmSync(h.dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  });
}

class StartupError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

export async function startHub(opts: HubOptions = {}): Promise<Hub> {
  // Ports are only "free a moment ago", so another process can grab one
  // before the hub binds it; retry a couple of times in that case only.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startHubOnce(opts);
    } catch (err) {
      if (err instanceof StartupError && err.addressInUse && attempt < 3) continue;
      throw err;
    }
  }
}

async function startHubOnce(opts: HubOptions): Promise<Hub> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'jsp-hub-'));
  const [publicPort, apiPort, hubPort] = await freePorts(3);
  const serviceToken = crypto.randomBytes(32).toString('hex');
  const adminToken = crypto.randomBytes(32).toString('hex');
  const marker = crypto.randomBytes(8).toString('hex');
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${publicPort}`;
  // The helper's own API calls: fetch cannot be given a CA, so over https they go to the Hub's own address, where it serves its API too.
  const apiUrl = opts.tls ? `http://127.0.0.1:${hubPort}` : url;
  const logPath = path.join(dir, 'hub.log');
  const configPath = path.join(dir, 'jupyterhub_config.py');

  // Absolute paths for every state file so nothing depends on cwd or leaks
  // outside the dir (cwd is the dir anyway, for anything not listed here).
  const config = [
    'c = get_config()  # noqa',
    `c.JupyterHub.authenticator_class = 'dummy'`,
    `c.JupyterHub.spawner_class = 'localprocess'`,
    `c.JupyterHub.bind_url = ${py(url)}`,
    `c.JupyterHub.hub_bind_url = ${py(`http://127.0.0.1:${hubPort}`)}`,
    `c.ConfigurableHTTPProxy.api_url = ${py(`http://127.0.0.1:${apiPort}`)}`,
    `c.ConfigurableHTTPProxy.auth_token = ${py(crypto.randomBytes(32).toString('hex'))}`,
    `c.ConfigurableHTTPProxy.pid_file = ${py(path.join(dir, 'jupyterhub-proxy.pid'))}`,
    `c.JupyterHub.pid_file = ${py(path.join(dir, 'jupyterhub.pid'))}`,
    `c.JupyterHub.db_url = ${py(`sqlite:///${path.join(dir, 'jupyterhub.sqlite')}`)}`,
    `c.JupyterHub.cookie_secret_file = ${py(path.join(dir, 'jupyterhub_cookie_secret'))}`,
    `c.JupyterHub.allow_named_servers = ${py(opts.namedServers ?? false)}`,
    ...(opts.tls ? [`c.JupyterHub.ssl_cert = ${py(opts.tls.certFile)}`, `c.JupyterHub.ssl_key = ${py(opts.tls.keyFile)}`] : []),
    `c.Spawner.cmd = ${py(opts.spawnerCmd ?? ['/usr/bin/jupyterhub-singleuser'])}`,
    `c.Spawner.environment = ${py({ [MARKER_VAR]: marker })}`,
    `c.JupyterHub.services = ${py([
      { name: SERVICE_NAME, api_token: serviceToken },
      { name: `${SERVICE_NAME}-admin`, api_token: adminToken },
    ])}`,
    `c.JupyterHub.load_roles = ${py([
      { name: `${SERVICE_NAME}-role`, scopes: SERVICE_SCOPES, services: [SERVICE_NAME] },
      { name: 'admin', services: [`${SERVICE_NAME}-admin`] },
    ])}`,
    '',
    '# extraConfig',
    opts.extraConfig ?? '',
    '',
  ].join('\n');
  await fsp.writeFile(configPath, config);

  const logFd = fs.openSync(logPath, 'a');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // Debian's configurable-http-proxy script only finds its modules this way
    // when run by a node that is not Debian's own; the hub passes its env on.
    NODE_PATH: [process.env.NODE_PATH, '/usr/share/nodejs'].filter(Boolean).join(path.delimiter),
    [MARKER_VAR]: marker,
  };
  const root = opts.distribution?.root;
  if (root !== undefined && !fs.existsSync(path.join(root, 'usr/bin/jupyterhub'))) {
    throw new Error(`run scripts/install-deps.sh --test: ${root} has no JupyterHub`);
  }
  const [command, args]: [string, string[]] =
    root === undefined
      ? [JUPYTERHUB_BIN, ['-f', configPath]]
      : ['unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-euc', IN_ROOT, 'in-root', root, dir, 'jupyterhub', '-f', configPath]];
  const child = spawn(command, args, {
    cwd: dir,
    env,
    detached: true, // own process group, so stop() can signal the whole group
    stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd); // the child holds its own copy

  let exitStatus: string | undefined;
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve((exitStatus = signal ?? `code ${code}`)));
    child.once('error', (err) => resolve((exitStatus = `spawn error: ${err.message}`)));
  });
  const pid = child.pid;
  // Resolves true once the hub has exited, false after `ms`. Clears its timer
  // so a finished stop() leaves nothing keeping the event loop (mocha) alive.
  const waitExit = (ms: number): Promise<boolean> =>
    new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      void exited.then(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  liveHubs.set(marker, { pid, dir, marker });
  installExitHook();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (exitStatus === undefined) {
        killGroup(pid, 'SIGTERM');
        await waitExit(STOP_GRACE_MS);
      }
      // Anything still in the group (or the hub itself if it ignored SIGTERM).
      killGroup(pid, 'SIGKILL');
      await waitExit(5_000);
      try {
        // Proxy and servers live in their own sessions: find them by marker.
        // SIGKILL because the hub's own graceful cleanup already had its chance.
        await waitFor(
          () => {
            const left = markedPids(marker);
            if (left.length === 0) return true;
            killPids(left, 'SIGKILL');
            return false;
          },
          { timeoutMs: 10_000, intervalMs: 100, what: `processes of hub ${dir} to exit` },
        );
      } finally {
        liveHubs.delete(marker);
        await fsp.rm(dir, { recursive: true, force: true, maxRetries: 5 });
      }
    })();
    return stopping;
  };

  const api = async <T = unknown>(
    method: string,
    apiPath: string,
    body?: unknown,
    token?: string,
  ): Promise<{ status: number; body: T }> => {
    const res = await fetch(`${apiUrl}/hub/api${apiPath}`, {
      method,
      headers: {
        Authorization: `token ${token ?? serviceToken}`,
        ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
    const text = await res.text();
    let parsed: unknown = null; // empty bodies (204) become null
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text; // e.g. an HTML error page from the proxy
      }
    }
    return { status: res.status, body: parsed as T };
  };

  const hub: Hub = { url, serviceToken, adminToken, dir, api, stop };

  try {
    // /hub/api/ needs no auth and answers 200 only once the hub is up AND has
    // registered its route in the proxy, i.e. the whole chain works. If the
    // hub dies meanwhile, stop polling at once instead of waiting 60 s.
    const outcome = await waitFor<'ready' | 'exited'>(
      async () => {
        if (exitStatus !== undefined) return 'exited';
        const status = await httpStatus(`${url}/hub/api/`, opts.tls);
        if (status !== 200) throw new Error(`GET /hub/api/ answered ${status}`);
        return 'ready';
      },
      { timeoutMs: STARTUP_TIMEOUT_MS, intervalMs: 100, what: `JupyterHub at ${url}` },
    );
    if (outcome === 'exited') throw new Error(`jupyterhub exited during startup (${exitStatus})`);
  } catch (err) {
    // Read the log before stop() deletes it.
    const log = tail(logPath, LOG_TAIL_LINES);
    await stop().catch(() => undefined);
    const inUse = /address already in use|EADDRINUSE/i.test(log);
    throw new StartupError(
      `${(err as Error).message}\n--- last ${LOG_TAIL_LINES} lines of ${logPath} ---\n${log}`,
      inUse,
    );
  }
  return hub;
}

function fail(what: string, res: { status: number; body: unknown }): never {
  throw new Error(`${what}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
}

/** Creates a hub user (a matching unix user must exist before its server can start). */
export async function createHubUser(hub: Hub, name: string): Promise<void> {
  const res = await hub.api('POST', `/users/${encodeURIComponent(name)}`);
  if (res.status !== 201 && res.status !== 409) fail(`creating hub user ${name}`, res);
}

/**
 * Mints an API token for `name`. Without `scopes` the hub's default applies
 * (the token gets the owner's full permissions); `expiresIn` is in seconds.
 */
/** Every token this test process minted, for the secrets check (test/zz-secrets.test.ts). */
export const issuedTokens: string[] = [];

export async function createToken(
  hub: Hub,
  name: string,
  scopes?: string[],
  expiresIn?: number,
): Promise<{ token: string; id: string }> {
  const body: Record<string, unknown> = { note: 'jupyter-ssh-proxy test' };
  if (scopes !== undefined) body.scopes = scopes;
  if (expiresIn !== undefined) body.expires_in = expiresIn;
  const res = await hub.api<{ token?: string; id?: string }>('POST', `/users/${encodeURIComponent(name)}/tokens`, body);
  if (res.status !== 201 || typeof res.body?.token !== 'string' || typeof res.body.id !== 'string') {
    fail(`creating token for ${name}`, res);
  }
  issuedTokens.push(res.body.token);
  return { token: res.body.token, id: res.body.id };
}

/** Revokes a token by id; an already-revoked token (404) is fine. */
export async function revokeToken(hub: Hub, name: string, id: string): Promise<void> {
  const res = await hub.api('DELETE', `/users/${encodeURIComponent(name)}/tokens/${encodeURIComponent(id)}`);
  if (res.status !== 204 && res.status !== 404) fail(`revoking token ${id} of ${name}`, res);
}

// ---------------------------------------------------------------------------
// Hub state, through the REST API with the test service's token.

/** How long a Hub state change (a server starting or stopping) may take here. */
export const HUB_STATE_TIMEOUT_MS = 60_000;

export interface ServerModel {
  name: string;
  ready: boolean;
  pending: string | null;
  started?: string;
  last_activity?: string;
  stopped?: boolean;
}

export interface UserModel {
  name: string;
  admin: boolean;
  groups: string[];
  servers?: Record<string, ServerModel>;
}

export async function userModel(hub: Hub, name: string): Promise<UserModel> {
  const r = await hub.api<UserModel>('GET', `/users/${encodeURIComponent(name)}`);
  if (r.status !== 200) throw new Error(`GET /users/${name}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function serverModel(hub: Hub, user: string, server = ''): Promise<ServerModel | undefined> {
  return (await userModel(hub, user)).servers?.[server];
}

export function serverPath(user: string, server: string): string {
  const u = encodeURIComponent(user);
  return server === '' ? `/users/${u}/server` : `/users/${u}/servers/${encodeURIComponent(server)}`;
}

/** Starts a server through the API (if it is not running) and waits until the Hub says it is ready. */
export async function ensureServer(hub: Hub, user: string, server = ''): Promise<ServerModel> {
  const now = await serverModel(hub, user, server);
  if (!now?.ready) {
    const r = await hub.api('POST', serverPath(user, server), {});
    // 201 started, 202 pending, 400 "already running"/"pending": the wait below decides.
    if (![201, 202, 400].includes(r.status)) throw new Error(`starting ${user}/${server}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  }
  return waitFor(
    async () => {
      const s = await serverModel(hub, user, server);
      return s?.ready && s.pending === null ? s : undefined;
    },
    { timeoutMs: HUB_STATE_TIMEOUT_MS, intervalMs: 200, what: `server ${user}/${server} to be ready` },
  );
}

/** Stops a server through the API (if it runs) and waits until the Hub has it neither running nor pending. */
export async function stopServer(hub: Hub, user: string, server = ''): Promise<void> {
  const r = await hub.api('DELETE', serverPath(user, server));
  // 202 stopping, 204 stopped, 400 not running, 404 no such named server.
  if (![202, 204, 400, 404].includes(r.status)) throw new Error(`stopping ${user}/${server}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  await waitFor(
    async () => {
      const s = await serverModel(hub, user, server);
      return s === undefined || (!s.ready && !s.pending);
    },
    { timeoutMs: HUB_STATE_TIMEOUT_MS, intervalMs: 200, what: `server ${user}/${server} to stop` },
  );
}
