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
import type { ProxyConfig } from './config.js';
import { apiUrlOf } from './hub.js';
import { HostKeyError } from './hostkeys.js';
import { createLogger } from './logger.js';
import { ProxyServer } from './server.js';

/** The repository's keys/ folder: the default KEYDIR. */
const DEFAULT_KEYDIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'keys');

/** Flag groups for --help, in the order operators look for them. */
const GROUPS = {
  listen: 'Listening:',
  keys: 'Keys:',
  hub: 'JupyterHub:',
  upstream: 'Upstream (the internal sshd):',
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

export function parseArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ProxyConfig {
  const args = yargs(argv)
    .scriptName('jupyter_ssh_proxy')
    .usage(
      '$0 [options] [URL]\n\nSSH reverse proxy for JupyterHub. URL is the Hub\'s public URL, e.g. http://127.0.0.1:8000.\n' +
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
    .option('hub-timeout', { group: GROUPS.hub, type: 'number', default: 10, describe: 'Seconds before a Hub API request is abandoned' })
    .option('hub-ca', { group: GROUPS.hub, type: 'string', describe: 'CA certificate file for a Hub with a private CA' })
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
      describe: 'Unix user for a Hub user; {username} is replaced (TLJH: jupyter-{username})',
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
    .option('max-auth-tries', { group: GROUPS.limits, type: 'number', default: 6, describe: 'Token attempts per connection' })
    .option('login-grace-time', { group: GROUPS.limits, type: 'number', default: 120, describe: 'Seconds a client has to log in' })
    .option('max-queued-bytes', { group: GROUPS.limits, type: 'number', default: 64 * 1024 * 1024, describe: 'Per-connection cap on bytes held while a leg rekeys' })
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
      const positive = ['login-grace-time', 'hub-timeout', 'auth-cache-ttl', 'spawn-timeout', 'activity-interval', 'server-poll-interval'] as const;
      for (const name of positive) if (!(a[name] > 0)) throw new Error(`--${name} must be a positive number of seconds`);
      if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) throw new Error('--port must be 0-65535');
      const metricsPort = a['metrics-port'];
      if (metricsPort !== undefined && (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535)) {
        throw new Error('--metrics-port must be 0-65535');
      }
      for (const name of ['max-auth-tries', 'hub-concurrency'] as const) {
        if (!Number.isInteger(a[name]) || a[name] < 1) throw new Error(`--${name} must be a positive integer`);
      }
      const sep = a['named-server-separator'];
      if (sep === '' || /[/:@\s]/.test(sep)) {
        throw new Error('--named-server-separator must be non-empty without / : @ or spaces (scp and rsync read / and : as paths)');
      }
      if (!a['unix-user'].includes('{username}')) throw new Error('--unix-user must contain {username}');
      for (const o of a['sshd-option']) if (!/^[A-Za-z]+[= ].+/.test(o)) throw new Error(`--sshd-option must be KEY=VALUE, got ${o}`);
      return true;
    })
    .strictOptions()
    .showHelpOnFail(false, 'Run with --help for the options')
    .help()
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .parseSync();

  const url = args._[0] === undefined ? undefined : String(args._[0]);
  // The public URL is what users see; in managed-service mode without one,
  // JupyterHub tells services its public host and base URL.
  const publicBase = url ?? `${env.JUPYTERHUB_HOST ?? ''}${env.JUPYTERHUB_BASE_URL ?? '/'}`;
  const page = (p: string) => `${publicBase.replace(/\/*$/, '/')}${p}`;
  return {
    ip: args.ip,
    port: args.port,
    keyDir: path.resolve(args.keydir),
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
    sshdPath: args.sshd,
    sshdOptions: args['sshd-option'],
    runtimeDir: args['runtime-dir'],
    maxAuthTries: args['max-auth-tries'],
    loginGraceTimeMs: args['login-grace-time'] * 1000,
    maxQueuedBytes: args['max-queued-bytes'],
  };
}

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  const config = parseArgs(argv);
  const log = createLogger(config.logLevel, config.logFormat);
  let server: ProxyServer;
  try {
    server = new ProxyServer(config, log);
    await server.listen();
  } catch (err) {
    const message = err instanceof HostKeyError || (err as NodeJS.ErrnoException).code ? (err as Error).message : (err as Error).stack;
    log.error(`cannot start: ${message}`);
    process.exitCode = 1;
    // Let winston flush before exiting.
    setImmediate(() => process.exit(1));
    return;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: shutting down`);
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
