// `npm run demo`: a throwaway real JupyterHub (DummyAuthenticator,
// LocalProcessSpawner) with a demo unix user and an API token, and
// jupyter-ssh-proxy in front of it. Prints the ssh command and the token;
// Ctrl-C (or SIGTERM, SIGHUP) removes everything it made and exits 0.
// Each piece is started and torn down by the test fixtures it imports.
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createHubUser, createToken, startHub } from '../test/helpers/hub.js';
import { DAEMON_ENV, DAEMON_NODE_ARGS } from '../test/helpers/deployed.js';
import { REPO_ROOT, startProxy, type ProxyProcess } from '../test/helpers/proxy.js';
import { createUnixUser } from '../test/helpers/unixuser.js';

const DEFAULT_PORT = 2222;
const DEFAULT_IP = '127.0.0.1';
/** The daemon's default KEYDIR: the host keys stay, so ssh knows the demo's host key the next time. */
const KEY_DIR = path.join(REPO_ROOT, 'keys');
/** Marks the proxy's log lines apart from the demo's own. */
const PROXY_PREFIX = '  proxy | ';

const USAGE = `Usage: npm run demo [-- --port N] [--ip ADDR]

Starts a throwaway JupyterHub with a demo user and an API token, and
jupyter-ssh-proxy in front of it, then prints the ssh command to try.
Ctrl-C stops it and removes everything it made (processes, the unix user,
temporary files).

  -p, --port N   port for the proxy (default ${DEFAULT_PORT}; 0 picks a free one)
      --ip ADDR  address for the proxy (default ${DEFAULT_IP}; 0.0.0.0 for all)
  -h, --help     this text
`;

interface Options {
  port: number;
  ip: string;
}

/** A request to stop: the exit code, and a line saying why if it is not a signal. */
interface Stop {
  code: number;
  message?: string;
}

type Cleanup = [what: string, run: () => Promise<void>];

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function complain(line: string): void {
  process.stderr.write(`demo: ${line}\n`);
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', short: 'p', default: String(DEFAULT_PORT) },
      ip: { type: 'string', default: DEFAULT_IP },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const port = Number(values.port);
  if (!/^\d+$/.test(values.port) || port > 65535) throw new Error(`--port must be 0-65535, got ${values.port}`);
  return { port, ip: values.ip };
}

function portInUse(port: number): string {
  return `port ${port} is already in use; pick another one: npm run demo -- --port ${port === 65535 ? DEFAULT_PORT + 1 : port + 1}`;
}

/** Fails fast, before anything is started, when the proxy could not listen. */
function checkPort({ ip, port }: Options): Promise<void> {
  if (port === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'EADDRINUSE' ? portInUse(port) : `cannot listen on ${ip}:${port}: ${err.message}`)),
    );
    probe.listen({ host: ip, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * One line for a failure. The fixtures append the tail of the Hub's or the
 * proxy's log to their errors; its last error line says why.
 */
function oneLine(err: unknown): string {
  const [first = '', ...rest] = (err instanceof Error ? err.message : String(err)).split('\n');
  const why = rest
    .reverse()
    .map((line) => /\berror: (.*)|^\[[EC] [^\]]*\] (.*)/.exec(line))
    .find((m) => m !== null);
  return why ? `${first.replace(/:$/, '')}: ${why[1] ?? why[2]}` : first;
}

/** Writes the daemon's output line by line, each under PROXY_PREFIX. */
function proxyPrinter(): { write(text: string): void; flush(): void } {
  let partial = '';
  return {
    write(text) {
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) say(PROXY_PREFIX + line);
    },
    flush() {
      if (partial !== '') say(PROXY_PREFIX + partial);
      partial = '';
    },
  };
}

/**
 * Starts the user, the Hub and the proxy, registering each in `cleanups` as
 * soon as it exists. `checkpoint` throws once a stop was requested, so a
 * Ctrl-C during start-up ends it after the step in progress.
 */
async function setUp(
  opts: Options,
  cleanups: Cleanup[],
  checkpoint: () => void,
  onProxyOutput: (text: string) => void,
  onProxyExit: (stop: Stop) => void,
): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run the demo as root: it creates a unix user, and the proxy runs sshd');
  await checkPort(opts);

  const user = await createUnixUser('demo');
  cleanups.push([`unix user ${user.name} and its home`, user.remove]);
  say(`demo: created unix user ${user.name}`);
  checkpoint();

  // DummyAuthenticator with a password, for the demo user only: other local
  // users cannot log in to the Hub and mint a token for it.
  const password = crypto.randomBytes(9).toString('base64url');
  say('demo: starting JupyterHub (DummyAuthenticator, LocalProcessSpawner)');
  const hub = await startHub({
    extraConfig: [
      `c.DummyAuthenticator.password = ${JSON.stringify(password)}`,
      `c.Authenticator.allowed_users = {${JSON.stringify(user.name)}}`,
    ].join('\n'),
  });
  cleanups.push([`JupyterHub, its servers and ${hub.dir}`, hub.stop]);
  say(`demo: JupyterHub is up at ${hub.url} (files in ${hub.dir})`);
  checkpoint();

  await createHubUser(hub, user.name);
  const { token } = await createToken(hub, user.name);
  checkpoint();

  say(`demo: starting jupyter-ssh-proxy on ${opts.ip}:${opts.port}`);
  let proxy: ProxyProcess;
  try {
    // Ctrl-C should not wait for open sessions (the daemon's default drain is 20 s).
    // With the Hub's service token, as docs/deploy.md sets it up: servers
    // start for logins with a key too.
    proxy = await startProxy(hub.url, ['--drain-timeout', '1', '--authorized-keys-file', '.ssh/authorized_keys'], {
      ip: opts.ip,
      port: opts.port,
      logLevel: 'info',
      keyDir: KEY_DIR,
      onOutput: onProxyOutput,
      // Ctrl-C reaches the demo only, which stops the proxy: sessions then end
      // with the daemon's shutdown message, not with their sshd killed by SIGINT.
      detached: true,
      // The node flags and malloc of every launcher (docs/deploy.md).
      nodeArgs: DAEMON_NODE_ARGS,
      env: { ...DAEMON_ENV, JUPYTERHUB_API_TOKEN: hub.serviceToken },
    });
  } catch (err) {
    // Someone took the port since checkPort.
    if (/EADDRINUSE/.test((err as Error).message)) throw new Error(portInUse(opts.port));
    throw err;
  }
  cleanups.push(['the proxy', proxy.stop]);
  const exited = (code: number | null, signal: NodeJS.Signals | null) =>
    onProxyExit(
      code === 0
        ? { code: 0, message: 'the proxy stopped' }
        : { code: 1, message: `the proxy exited (${signal ?? `code ${code}`}); its log is above` },
    );
  if (proxy.child.exitCode !== null || proxy.child.signalCode !== null) exited(proxy.child.exitCode, proxy.child.signalCode);
  else proxy.child.once('exit', exited);
  checkpoint();

  const port = proxy.port;
  const host = opts.ip === '0.0.0.0' || opts.ip === '::' || opts.ip === '' ? '127.0.0.1' : opts.ip;
  const sftpHost = host.includes(':') ? `[${host}]` : host;
  const rule = '='.repeat(72);
  say('');
  say(rule);
  say(' jupyter-ssh-proxy demo');
  say('');
  say(` JupyterHub:  ${hub.url}  (user ${user.name}, password ${password})`);
  say('');
  say(' Log in with:');
  say(`     ssh -p ${port} ${user.name}@${host}`);
  say(' and paste this token at the "JupyterHub API token:" prompt:');
  say(`     ${token}`);
  say(' Your Jupyter server starts at the first login. Files, with the same token:');
  say(`     sftp -P ${port} ${user.name}@${sftpHost}`);
  say(' Or install your ssh key with the token once, and log in with the key from then on:');
  say(`     ssh-copy-id -p ${port} ${user.name}@${host}`);
  say(` More tokens: ${hub.url}/hub/token`);
  say('');
  say(' Ctrl-C to stop (removes the Hub, its servers, the user and temp files).');
  say(rule);
  say(`DEMO_READY port=${port} user=${user.name} token=${token} hub=${hub.url} hubdir=${hub.dir}`);
  say('');
}

async function main(): Promise<void> {
  // A closed terminal or pipe must not turn the clean-up into a crash.
  process.stdout.on('error', () => undefined);
  process.stderr.on('error', () => undefined);

  let opts: Options;
  try {
    opts = options(process.argv.slice(2));
  } catch (err) {
    complain(`${(err as Error).message} (npm run demo -- --help)`);
    process.exit(2);
  }

  let stop: Stop | undefined;
  let requestStop!: (s: Stop) => void;
  const stopRequested = new Promise<Stop>((resolve) => {
    requestStop = (s) => {
      if (stop !== undefined) return; // already stopping (npm passes Ctrl-C on once more)
      stop = s;
      resolve(s);
    };
  });
  let ready = false;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      if (stop === undefined && !ready) say('demo: stopping after the current step');
      requestStop({ code: 0 });
    });
  }

  const cleanups: Cleanup[] = [];
  const printer = proxyPrinter();
  let code: number;
  try {
    await setUp(
      opts,
      cleanups,
      () => {
        if (stop !== undefined) throw new Error('stopped during start-up');
      },
      printer.write,
      requestStop,
    );
    ready = true;
    const s = await stopRequested;
    if (s.message !== undefined) complain(s.message);
    code = s.code;
  } catch (err) {
    // After a stop request, this is the checkpoint ending the start-up.
    if (stop !== undefined) code = stop.code;
    else {
      complain(oneLine(err));
      code = 1;
    }
  }

  if (cleanups.length > 0) say('demo: cleaning up');
  for (const [what, run] of cleanups.reverse()) {
    try {
      await run();
      say(`demo: cleaned up ${what}`);
    } catch (err) {
      complain(`could not clean up ${what}: ${oneLine(err)}`);
      code = 1;
    }
  }
  printer.flush();
  process.exit(code);
}

void main();
