/**
 * Command line: `jupyter_ssh_proxy -p PORT -k KEYDIR URL`. Flag names follow
 * configurable-http-proxy (`--ip`, `--port`, `--log-level`) and OpenSSH
 * (`--max-auth-tries`, `--login-grace-time`) where those exist.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { ProxyConfig } from './config.js';
import { HostKeyError } from './hostkeys.js';
import { createLogger } from './logger.js';
import { ProxyServer } from './server.js';

/** The repository's keys/ folder: the default KEYDIR. */
const DEFAULT_KEYDIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'keys');

export function parseArgs(argv: string[]): ProxyConfig {
  const args = yargs(argv)
    .scriptName('jupyter_ssh_proxy')
    .usage('$0 [options] URL\n\nSSH reverse proxy for JupyterHub. URL is the Hub\'s public URL, e.g. http://127.0.0.1:8000')
    .positional('URL', { type: 'string', describe: 'JupyterHub public URL' })
    .option('ip', { type: 'string', default: '', describe: 'Address to listen on (default: all interfaces)' })
    .option('port', { alias: 'p', type: 'number', default: 2222, describe: 'Port to listen on (0 picks a free one)' })
    .option('keydir', { alias: 'k', type: 'string', default: DEFAULT_KEYDIR, describe: 'Host key folder (sshd file names; missing keys are generated 0600)' })
    .option('log-level', { type: 'string', default: 'info', choices: ['error', 'warn', 'info', 'debug'], describe: 'Log level' })
    .option('unix-user', { type: 'string', default: '{username}', describe: 'Unix user for a Hub user; {username} is replaced (TLJH: jupyter-{username})' })
    .option('sshd', { type: 'string', default: '/usr/sbin/sshd', describe: 'OpenSSH sshd binary, started per connection as `sshd -i`' })
    .option('sshd-option', {
      type: 'string',
      default: [] as string[],
      // Not `array: true`: that would swallow the URL after the flag.
      coerce: (value: string | string[]): string[] => [value].flat(),
      describe: 'Extra sshd option KEY=VALUE (repeatable), e.g. RekeyLimit=1G',
    })
    .option('runtime-dir', { type: 'string', default: '/run/jupyter-ssh-proxy', describe: 'Where the internal sshd configuration and keys are written' })
    .option('max-auth-tries', { type: 'number', default: 6, describe: 'Token attempts per connection' })
    .option('login-grace-time', { type: 'number', default: 120, describe: 'Seconds a client has to log in' })
    .option('hub-timeout', { type: 'number', default: 10, describe: 'Seconds before a JupyterHub API request is abandoned' })
    .option('hub-ca', { type: 'string', describe: 'CA certificate file for a Hub with a private CA' })
    .option('max-queued-bytes', { type: 'number', default: 64 * 1024 * 1024, describe: 'Per-connection cap on bytes held while a leg rekeys' })
    .demandCommand(1, 1, 'Give the JupyterHub URL', 'Give exactly one JupyterHub URL')
    .check((a) => {
      const url = String(a._[0]);
      if (!/^https?:\/\/[^/]+/.test(url)) throw new Error(`URL must be http(s)://host[:port][/prefix], got ${url}`);
      if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) throw new Error('--port must be 0-65535');
      if (!Number.isInteger(a['max-auth-tries']) || a['max-auth-tries'] < 1) throw new Error('--max-auth-tries must be a positive integer');
      if (!(a['login-grace-time'] > 0)) throw new Error('--login-grace-time must be positive');
      if (!(a['hub-timeout'] > 0)) throw new Error('--hub-timeout must be positive');
      if (!a['unix-user'].includes('{username}')) throw new Error('--unix-user must contain {username}');
      for (const o of a['sshd-option']) if (!/^[A-Za-z]+[= ].+/.test(o)) throw new Error(`--sshd-option must be KEY=VALUE, got ${o}`);
      return true;
    })
    .strict()
    .help()
    .version(false)
    .parseSync();
  return {
    ip: args.ip,
    port: args.port,
    keyDir: path.resolve(args.keydir),
    hubUrl: String(args._[0]),
    hubTimeoutMs: args['hub-timeout'] * 1000,
    hubCa: args['hub-ca'],
    logLevel: args['log-level'],
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
  const log = createLogger(config.logLevel);
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
