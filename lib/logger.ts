/**
 * winston logging. The text format is configurable-http-proxy's:
 *   12:34:56.789 [JupyterSSHProxy] info: [3fa2c1 10.0.0.7:51234] message
 * `json` writes one object per line for log shippers, with `conn` (a short
 * connection id) and `peer` (the source address) as fields of their own.
 * Nothing here ever receives a token, password or private key.
 */
import type net from 'node:net';
import winston from 'winston';

export type Logger = winston.Logger;
export type LogFormat = 'text' | 'json';

/**
 * A message as one entry of the text log. Messages carry what clients chose
 * (a login name is any string): a line break could forge a line of its own
 * ("... info: login accepted ...") for whoever reads or parses the log, and
 * a terminal escape could rewrite an operator's screen. Continuation lines
 * (a stack trace's) are indented, so no line but the first starts with a
 * timestamp; other control characters show as '?'. JSON escapes them itself.
 */
function oneEntry(message: string): string {
  return message.replace(/\r?\n|[\u2028\u2029]/g, '\n    ').replace(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/g, '?');
}

export function createLogger(level: string, format: LogFormat = 'text'): Logger {
  const text = winston.format.printf((info) => {
    const conn = info.conn ? `[${String(info.conn)} ${String(info.peer)}] ` : '';
    return `${String(info.timestamp)} [JupyterSSHProxy] ${info.level}: ${conn}${oneEntry(String(info.message))}`;
  });
  return winston.createLogger({
    level,
    format:
      format === 'json'
        ? winston.format.combine(winston.format.timestamp(), winston.format.json())
        : winston.format.combine(winston.format.timestamp({ format: 'HH:mm:ss.SSS' }), text),
    transports: [new winston.transports.Console()],
  });
}

/**
 * Keeps the daemon serving when its standard output fails: a log shipper
 * or `tee` that exited (EPIPE), a closed terminal, a full disk under a log
 * file (ENOSPC). Node emits the failed write as an error on process.stdout,
 * and with no listener that is an uncaught exception: the next log line
 * would end every session. From then on the log is lost; one line on
 * stderr says so, if stderr still takes it.
 */
export function surviveLostOutput(log: Logger): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (log.silent) return;
    log.silent = true;
    process.stderr.write(`jupyter_ssh_proxy: standard output failed (${err.code ?? err.message}): no more log lines; still serving\n`);
  });
  // A failed stderr leaves nothing to report it to.
  process.stderr.on('error', () => {});
}

/** A listening address as operators type it: `[::]:2222` for IPv6, `127.0.0.1:2222` for IPv4. */
export function formatListenAddress(address: net.AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}
