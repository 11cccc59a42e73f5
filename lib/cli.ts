/**
 * Command line: `jupyter_ssh_proxy -p PORT -k KEYDIR URL`. Flag names follow
 * configurable-http-proxy (`--ip`, `--port`, `--log-level`) and OpenSSH
 * (`--max-auth-tries`, `--login-grace-time`) where those exist.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { CLIENT_LEG_FLAGS, DEFAULT_CLIENT_LEG, aesGcmCiphers, resolveAlgorithmList, type ClientLegAlgorithms, type PreferAesGcm } from './algorithms.js';
import { ConfigError, type ProxyConfig } from './config.js';
import { apiUrlOf } from './hub.js';
import { DEFAULT_PENALTIES, parsePenalties } from './penalties.js';
import { createLogger, surviveLostOutput } from './logger.js';
import { ProxyServer } from './server.js';
import { unixNamingProblem } from './unixname.js';
import { authorizedKeysPatternProblem } from './authorizedkeys.js';

/** The repository's keys/ folder: the default KEYDIR. */
const DEFAULT_KEYDIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'keys');

/** Sources the penalty table tracks at most (OpenSSH: max-sources4/6). */
const PENALIZED_SOURCES_TRACKED = 65536;

/** OpenSSH's MaxStartups syntax: `start:rate:full`, or a single number. */
function parseMaxStartups(spec: string): { start: number; rate: number; full: number } {
  const parts = spec.split(':').map(Number);
  const [start, rate, full] = parts.length === 1 ? [parts[0]!, 100, parts[0]!] : (parts as [number, number, number]);
  if (parts.length !== 1 && parts.length !== 3) throw new Error('--max-startups must be start:rate:full, e.g. 10:30:100');
  if (![start, rate, full].every(Number.isInteger) || start < 1 || full < start || rate < 0 || rate > 100) {
    throw new Error('--max-startups must be start:rate:full with 1 <= start <= full and rate 0-100');
  }
  return { start, rate, full: Math.max(full, start + 1) };
}

/** The client leg's algorithm lists from their flags' values. */
function resolveAlgorithms(args: Record<(typeof CLIENT_LEG_FLAGS)[keyof ClientLegAlgorithms], string>): ClientLegAlgorithms {
  const resolved = { ...DEFAULT_CLIENT_LEG };
  for (const [key, flag] of Object.entries(CLIENT_LEG_FLAGS) as [keyof ClientLegAlgorithms, keyof typeof args][]) {
    const spec = args[flag];
    if (spec === '') throw new Error(`--${flag} needs a list of algorithms`);
    resolved[key] = resolveAlgorithmList(spec, DEFAULT_CLIENT_LEG[key], `--${flag}`);
  }
  return resolved;
}

/**
 * Joins `--ciphers -NAME` into `--ciphers=-NAME`, as sshd_config's
 * `Ciphers -NAME` reads; yargs would take -NAME for short flags.
 */
function joinAlgorithmRemovals(argv: string[]): string[] {
  const flags = new Set(Object.values(CLIENT_LEG_FLAGS).map((flag) => `--${flag}`));
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const next = argv[i + 1];
    if (flags.has(argv[i]!) && next?.startsWith('-') && !next.startsWith('--')) joined.push(`${argv[i]}=${argv[++i]}`);
    else joined.push(argv[i]!);
  }
  return joined;
}

/** Flag groups for --help, in the order operators look for them. */
const GROUPS = {
  listen: 'Listening:',
  keys: 'Keys:',
  algorithms: 'Algorithms offered to clients (sshd_config syntax: a list, or +, - or ^ and a list; * and ? match):',
  hub: 'JupyterHub:',
  upstream: 'Upstream (where sessions run):',
  limits: 'Limits:',
  log: 'Logging:',
  metrics: 'Metrics:',
};

/** Environment variables named JUPYTER_SSH_PROXY_<FLAG> set any flag, e.g. JUPYTER_SSH_PROXY_LOG_LEVEL=debug. */
export const ENV_PREFIX = 'JUPYTER_SSH_PROXY';

/** Reads a --config file: YAML (a superset of JSON) whose keys are flag names. */
function readConfigFile(file: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = yaml.load(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read config file ${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (parsed === undefined || parsed === null) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error(`config file ${file} must hold a mapping of flag names to values`);
  return parsed as Record<string, unknown>;
}

/**
 * Resolves the configuration from flags, environment and config file. At
 * start an invalid value prints its reason and exits; with `throwOnError`
 * (a SIGHUP reload) it throws instead, and the daemon goes on.
 */
export function parseArgs(argv: string[], env: NodeJS.ProcessEnv = process.env, throwOnError = false): ProxyConfig {
  const parser = yargs(joinAlgorithmRemovals(argv))
    .scriptName('jupyter_ssh_proxy')
    .usage(
      '$0 [options] [URL]\n\nSSH reverse proxy for JupyterHub. URL is where the proxy reaches the Hub, e.g. http://127.0.0.1:8000 (--public-url: where users do).\n' +
        'As a JupyterHub managed service, JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are read from the environment and URL is optional.',
    )
    .option('ip', { group: GROUPS.listen, type: 'string', default: '', describe: 'Address to listen on (default: all interfaces)' })
    .option('port', { group: GROUPS.listen, alias: 'p', type: 'number', default: 2222, describe: 'Port to listen on (0 picks a free one)' })
    .option('keydir', {
      group: GROUPS.keys,
      alias: 'k',
      type: 'string',
      default: DEFAULT_KEYDIR,
      describe: 'Host key folder (sshd file names; missing keys are generated 0600)',
    })
    .option('authorized-keys-file', {
      group: GROUPS.keys,
      type: 'string',
      describe:
        "Let users log in with a key listed in this file of their unix account (sshd's AuthorizedKeysFile: relative to the home, %h home, %u user), " +
        "e.g. .ssh/authorized_keys; with --upstream websocket, the file in the user's server; needs JUPYTERHUB_API_TOKEN. Default: tokens only",
    })
    .option('upstream', {
      group: GROUPS.upstream,
      choices: ['local-sshd', 'websocket'],
      default: 'local-sshd',
      describe:
        "Where sessions run: local-sshd, an sshd on this machine as the user's unix account (LocalProcessSpawner, SudoSpawner, TLJH); " +
        "websocket, the user's server itself through its jupyter_ssh_proxy_server extension (container spawners; needs the URL argument and JUPYTERHUB_API_TOKEN)",
    })
    .option('websocket-frames', {
      group: GROUPS.upstream,
      type: 'boolean',
      default: false,
      describe:
        'With --upstream websocket: carry SSH in WebSocket messages, not as the raw stream after the upgrade (about half the throughput); ' +
        'for a proxy between here and the servers that reads WebSocket frames',
    })
    .option('trusted-user-ca-keys', {
      group: GROUPS.keys,
      type: 'string',
      describe:
        "Let users log in with a certificate signed by a key in this file (sshd's TrustedUserCAKeys): its principals name the Hub user. " +
        'The file is read again when it changes; needs JUPYTERHUB_API_TOKEN. Default: none',
    })
    .option('revoked-keys', {
      group: GROUPS.keys,
      type: 'string',
      describe:
        "Keys and certificates that may not log in: a file of public keys or an OpenSSH KRL (ssh-keygen -k), as sshd's RevokedKeys. " +
        'Read again when it changes; if it cannot be read, no key logs in. Default: none',
    })
    .option('kex-algorithms', { group: GROUPS.algorithms, type: 'string', default: DEFAULT_CLIENT_LEG.kex.join(','), describe: 'Key exchange algorithms (KexAlgorithms)' })
    .option('ciphers', {
      group: GROUPS.algorithms,
      type: 'string',
      default: DEFAULT_CLIENT_LEG.ciphers.join(','),
      describe: 'Ciphers (Ciphers). A client picks its first choice that is offered; OpenSSH clients prefer chacha20-poly1305, then AES-CTR: --ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com gives them AES-GCM, the cheapest for the proxy',
    })
    .option('macs', { group: GROUPS.algorithms, type: 'string', default: DEFAULT_CLIENT_LEG.macs.join(','), describe: 'MACs for ciphers that are not AEAD (MACs)' })
    .option('host-key-algorithms', {
      group: GROUPS.algorithms,
      type: 'string',
      default: DEFAULT_CLIENT_LEG.hostKey.join(','),
      describe: 'Host key signature algorithms, of those the keys allow (HostKeyAlgorithms)',
    })
    .option('prefer-aes-gcm', {
      group: GROUPS.algorithms,
      type: 'string',
      choices: ['ctr', 'all', 'no'],
      default: 'ctr',
      describe:
        'Switch a client that offers AES-GCM to it once it moves bulk data (one more key exchange): ctr, one that chose AES-CTR (PuTTY, paramiko), ' +
        'whose HMAC costs the proxy two to four times the CPU of AES-GCM; all, also one that chose chacha20-poly1305 (OpenSSH): less CPU for the proxy and for clients ' +
        'with AES instructions, but clients without them (a Raspberry Pi 4) are slower with AES-GCM; no, never',
    })
    .option('hub-timeout', { group: GROUPS.hub, type: 'number', default: 10, describe: 'Seconds before a Hub API request is abandoned' })
    .option('hub-ca', { group: GROUPS.hub, type: 'string', describe: 'CA certificate file for a Hub with a private CA' })
    .option('public-url', {
      group: GROUPS.hub,
      type: 'string',
      describe: "The Hub's address as users know it (https://hub.example.org), for the token and home page links shown to them; default: URL",
    })
    .option('hub-concurrency', { group: GROUPS.hub, type: 'number', default: 16, describe: 'Hub API requests in flight at most' })
    .option('auth-cache-ttl', { group: GROUPS.hub, type: 'number', default: 60, describe: 'Seconds a verified token is trusted before the Hub is asked again' })
    .option('named-server-separator', {
      group: GROUPS.hub,
      type: 'string',
      default: '+',
      describe: 'Separates user and server in a login name: alice+gpu is alice\'s server gpu',
    })
    .option('create-named-servers', { group: GROUPS.hub, type: 'boolean', default: true, describe: 'Create a named server that does not exist yet (--no-create-named-servers)' })
    .option('start-server', { group: GROUPS.hub, type: 'boolean', default: true, describe: 'Start a stopped server at login (--no-start-server)' })
    .option('spawn-timeout', { group: GROUPS.hub, type: 'number', default: 300, describe: 'Seconds to wait for a server to start' })
    .option('activity-interval', { group: GROUPS.hub, type: 'number', default: 300, describe: 'Seconds between activity reports to the Hub while a session is used' })
    .option('server-poll-interval', { group: GROUPS.hub, type: 'number', default: 60, describe: 'Seconds between checks that the server still runs (sessions end when it stops)' })
    .option('unix-user', {
      group: GROUPS.upstream,
      type: 'string',
      default: '{username}',
      describe: "Unix user for a Hub user; {username} is replaced. tljh: The Littlest JupyterHub's accounts (jupyter-{username}, long names cut and hashed as TLJH does)",
    })
    .option('sshd', { group: GROUPS.upstream, type: 'string', default: '/usr/sbin/sshd', describe: 'OpenSSH sshd binary, started per connection as `sshd -i`' })
    .option('sshd-option', {
      group: GROUPS.upstream,
      type: 'string',
      default: [] as string[],
      // Not `array: true`: that would swallow the URL after the flag.
      coerce: (value: string | string[]): string[] => [value].flat(),
      describe: 'Extra sshd option KEY=VALUE (repeatable), e.g. RekeyLimit=1G',
    })
    .option('runtime-dir', { group: GROUPS.upstream, type: 'string', default: '/run/jupyter-ssh-proxy', describe: 'Where the internal sshd configuration and keys are written' })
    .option('max-auth-tries', { group: GROUPS.limits, type: 'number', default: 6, describe: 'Token attempts per connection (and key signatures that do not verify; keys that are not listed do not count)' })
    .option('login-grace-time', { group: GROUPS.limits, type: 'number', default: 120, describe: 'Seconds a client has to log in' })
    .option('max-queued-bytes', { group: GROUPS.limits, type: 'number', default: 64 * 1024 * 1024, describe: 'Per-connection cap on bytes held while a leg rekeys' })
    .option('max-sessions', { group: GROUPS.limits, type: 'number', default: 4096, describe: 'Connections at most; more are refused' })
    .option('max-startups', {
      group: GROUPS.limits,
      type: 'string',
      default: '10:30:100',
      describe: 'start:rate:full (OpenSSH MaxStartups): from start unauthenticated connections drop rate% of new ones, rising to all at full',
    })
    .option('per-source-penalties', {
      group: GROUPS.limits,
      type: 'string',
      default: DEFAULT_PENALTIES,
      describe: 'OpenSSH PerSourcePenalties: seconds per event (authfail, noauth, grace-exceeded, malformed), max, min; "no" turns them off',
    })
    .option('per-source-netblock-size', { group: GROUPS.limits, type: 'string', default: '32:128', describe: 'Prefix lengths (IPv4:IPv6) that group sources for penalties' })
    .option('per-source-penalty-exempt-list', { group: GROUPS.limits, type: 'string', default: '', describe: 'Comma-separated addresses or CIDR blocks never penalized' })
    .option('drain-timeout', { group: GROUPS.limits, type: 'number', default: 20, describe: 'Seconds open sessions may go on after SIGTERM/SIGINT' })
    .option('pid-file', { group: GROUPS.listen, type: 'string', describe: 'Write the process id here (removed at exit)' })
    .option('log-level', { group: GROUPS.log, type: 'string', default: 'info', choices: ['error', 'warn', 'info', 'debug'], describe: 'Log level' })
    .option('log-format', { group: GROUPS.log, type: 'string', default: 'text', choices: ['text', 'json'], describe: 'text (configurable-http-proxy style) or json (one object per line)' })
    .option('metrics-ip', { group: GROUPS.metrics, type: 'string', default: '', describe: 'Address for /metrics and /health (default: all interfaces)' })
    .option('metrics-port', { group: GROUPS.metrics, type: 'number', describe: 'Port for /metrics and /health; metrics are off without it' })
    .config('config', 'YAML or JSON file of flag values (flags and JUPYTER_SSH_PROXY_* environment variables win)', readConfigFile)
    .env(ENV_PREFIX)
    .check((a) => {
      if (a._.length > 1) throw new Error('Give at most one JupyterHub URL');
      const url = a._[0] === undefined ? undefined : String(a._[0]);
      if (url === undefined && !env.JUPYTERHUB_API_URL) throw new Error('Give the JupyterHub URL (or run as a managed service with JUPYTERHUB_API_URL set)');
      if (url !== undefined && !/^https?:\/\/[^/]+/.test(url)) throw new Error(`URL must be http(s)://host[:port][/prefix], got ${url}`);
      const positive = ['login-grace-time', 'hub-timeout', 'auth-cache-ttl', 'spawn-timeout', 'activity-interval', 'server-poll-interval', 'drain-timeout'] as const;
      for (const name of positive) if (!(a[name] > 0)) throw new Error(`--${name} must be a positive number of seconds`);
      if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) throw new Error('--port must be 0-65535');
      const metricsPort = a['metrics-port'];
      if (metricsPort !== undefined && (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535)) {
        throw new Error('--metrics-port must be 0-65535');
      }
      parseMaxStartups(a['max-startups']);
      const { ciphers } = resolveAlgorithms(a);
      if (a['prefer-aes-gcm'] === 'all' && aesGcmCiphers(ciphers).length === 0) throw new Error('--prefer-aes-gcm all needs an AES-GCM cipher in --ciphers');
      if (a['per-source-penalties'] !== 'no') {
        try {
          parsePenalties(a['per-source-penalties'], a['per-source-netblock-size'], a['per-source-penalty-exempt-list'], 1);
        } catch (err) {
          throw new Error(`--per-source-penalties / --per-source-netblock-size / --per-source-penalty-exempt-list: ${(err as Error).message}`);
        }
      }
      for (const name of ['max-auth-tries', 'hub-concurrency', 'max-sessions'] as const) {
        if (!Number.isInteger(a[name]) || a[name] < 1) throw new Error(`--${name} must be a positive integer`);
      }
      const sep = a['named-server-separator'];
      if (sep === '' || /[/:@\s]/.test(sep)) {
        throw new Error('--named-server-separator must be non-empty without / : @ or spaces (scp and rsync read / and : as paths)');
      }
      if (a['public-url'] !== undefined && !/^https?:\/\/[^/\s]+\S*$/.test(a['public-url'])) {
        throw new Error(`--public-url must be an http:// or https:// URL, got ${a['public-url']}`);
      }
      const naming = unixNamingProblem(a['unix-user']);
      if (naming) throw new Error(naming);
      const keysFile = a['authorized-keys-file'];
      if (keysFile !== undefined) {
        const problem = authorizedKeysPatternProblem(keysFile);
        if (problem) throw new Error(problem);
        // A key login brings no user token: the service's starts the server.
        if (!env.JUPYTERHUB_API_TOKEN) throw new Error('--authorized-keys-file needs a JupyterHub service token in JUPYTERHUB_API_TOKEN, to start servers for key logins');
      }
      if (a.upstream === 'websocket') {
        if (a._[0] === undefined) throw new Error("--upstream websocket needs the URL argument: the Hub's address, through which its proxy reaches users' servers");
        if (!env.JUPYTERHUB_API_TOKEN) throw new Error("--upstream websocket needs a JupyterHub service token with access:servers in JUPYTERHUB_API_TOKEN, to reach users' servers");
      } else if (a['websocket-frames']) {
        throw new Error('--websocket-frames is for --upstream websocket');
      }
      if (a['trusted-user-ca-keys'] !== undefined && !env.JUPYTERHUB_API_TOKEN) {
        throw new Error('--trusted-user-ca-keys needs a JupyterHub service token in JUPYTERHUB_API_TOKEN, to start servers for certificate logins');
      }
      for (const o of a['sshd-option']) if (!/^[A-Za-z]+[= ].+/.test(o)) throw new Error(`--sshd-option must be KEY=VALUE, got ${o}`);
      return true;
    })
    .strictOptions()
    .showHelpOnFail(false, 'Run with --help for the options')
    .help()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 110));
  if (throwOnError) {
    parser.exitProcess(false).fail((message, err) => {
      throw err ?? new Error(message);
    });
  }
  const args = parser.parseSync();

  const url = args._[0] === undefined ? undefined : String(args._[0]);
  // The links users are shown: --public-url, else URL (often an address only
  // the Hub's machine reaches, such as 127.0.0.1); in managed-service mode
  // without either, what JupyterHub tells services of its host and base URL.
  const publicBase = args['public-url'] ?? url ?? `${env.JUPYTERHUB_HOST ?? ''}${env.JUPYTERHUB_BASE_URL ?? '/'}`;
  const page = (p: string) => `${publicBase.replace(/\/*$/, '/')}${p}`;
  return {
    ip: args.ip,
    port: args.port,
    keyDir: path.resolve(args.keydir),
    algorithms: resolveAlgorithms(args),
    preferAesGcm: args['prefer-aes-gcm'] as PreferAesGcm,
    hubApiUrl: url ? apiUrlOf(url) : env.JUPYTERHUB_API_URL!,
    tokenPage: page('hub/token'),
    homePage: page('hub/home'),
    serviceToken: env.JUPYTERHUB_API_TOKEN || undefined,
    hubTimeoutMs: args['hub-timeout'] * 1000,
    hubCa: args['hub-ca'],
    hubConcurrency: args['hub-concurrency'],
    authCacheTtlMs: args['auth-cache-ttl'] * 1000,
    separator: args['named-server-separator'],
    startServers: args['start-server'],
    createNamedServers: args['create-named-servers'],
    spawnTimeoutMs: args['spawn-timeout'] * 1000,
    activityIntervalMs: args['activity-interval'] * 1000,
    serverPollIntervalMs: args['server-poll-interval'] * 1000,
    logLevel: args['log-level'],
    logFormat: args['log-format'] as 'text' | 'json',
    metricsIp: args['metrics-ip'],
    metricsPort: args['metrics-port'],
    unixUser: args['unix-user'],
    authorizedKeysFile: args['authorized-keys-file'],
    trustedUserCaKeys: args['trusted-user-ca-keys'],
    upstream: args.upstream as ProxyConfig['upstream'],
    serversUrl: args.upstream === 'websocket' ? url : undefined,
    websocketFrames: args['websocket-frames'],
    revokedKeys: args['revoked-keys'],
    sshdPath: args.sshd,
    sshdOptions: args['sshd-option'],
    runtimeDir: args['runtime-dir'],
    maxAuthTries: args['max-auth-tries'],
    loginGraceTimeMs: args['login-grace-time'] * 1000,
    maxQueuedBytes: args['max-queued-bytes'],
    maxSessions: args['max-sessions'],
    maxStartups: parseMaxStartups(args['max-startups']),
    penalties:
      args['per-source-penalties'] === 'no'
        ? undefined
        : parsePenalties(
            args['per-source-penalties'],
            args['per-source-netblock-size'],
            args['per-source-penalty-exempt-list'],
            PENALIZED_SOURCES_TRACKED,
          ),
    drainTimeoutMs: args['drain-timeout'] * 1000,
    pidFile: args['pid-file'],
  };
}

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  // Small buffers (under 4 KiB) each get their own memory instead of a slice
  // of a shared 8 KiB block: ssh2 keeps a few small buffers per connection
  // (identification strings, cipher tag/length buffers), and each kept slice
  // kept a whole block alive (~6 KiB per idle session). About 50 ns more per
  // small allocation; large ones (packets, socket reads) were never pooled.
  Buffer.poolSize = 0;
  const config = parseArgs(argv);
  const log = createLogger(config.logLevel, config.logFormat);
  surviveLostOutput(log);
  const server = new ProxyServer(config, log);
  const fail = (message: string) => {
    log.error(`cannot start: ${message}`);
    // Let winston flush before exiting.
    setImmediate(() => process.exit(1));
  };
  // Signals are taken before the daemon listens: "listening on" is the line
  // that tells scripts and tests it is ready, and a SIGTERM sent on it must
  // not meet the default action (death, leaving the runtime folder and pid
  // file behind). One that comes while it starts is acted on once it listens.
  let started = false;
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn(`${signal} again: disconnecting everyone now`);
      void server.shutdown(0);
      return;
    }
    stopping = true;
    log.info(`${signal}: no new connections; shutting down`);
    void server.shutdown(config.drainTimeoutMs).then(() => {
      if (config.pidFile) fs.rmSync(config.pidFile, { force: true });
      log.info('stopped');
      setImmediate(() => process.exit(0));
    });
  };
  let pendingSignal: string | undefined;
  const onStopSignal = (signal: string) => {
    if (started) stop(signal);
    else pendingSignal ??= signal;
  };
  process.on('SIGTERM', () => onStopSignal('SIGTERM'));
  process.on('SIGINT', () => onStopSignal('SIGINT'));
  process.on('SIGHUP', () => {
    // While starting, the configuration being loaded is already the current one.
    if (!started) return;
    let next: ProxyConfig;
    try {
      next = parseArgs(argv, process.env, true);
    } catch (err) {
      log.error(`SIGHUP: configuration not reloaded: ${(err as Error).message}`);
      return;
    }
    server.reload(next).catch((err: Error) => log.error(`SIGHUP: configuration not reloaded: ${err.message}`));
  });

  // Written before listening too, so it is there once "listening on" is.
  if (config.pidFile) {
    try {
      fs.writeFileSync(config.pidFile, `${process.pid}\n`);
    } catch (err) {
      return fail(`cannot write --pid-file: ${(err as Error).message}`);
    }
  }
  try {
    await server.listen();
  } catch (err) {
    if (config.pidFile) fs.rmSync(config.pidFile, { force: true });
    const known = err instanceof ConfigError || (err as NodeJS.ErrnoException).code !== undefined;
    return fail(known ? (err as Error).message : String((err as Error).stack));
  }
  started = true;
  if (pendingSignal !== undefined) stop(pendingSignal);
}
