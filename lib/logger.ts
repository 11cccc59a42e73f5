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

export function createLogger(level: string, format: LogFormat = 'text'): Logger {
  const text = winston.format.printf((info) => {
    const conn = info.conn ? `[${String(info.conn)} ${String(info.peer)}] ` : '';
    return `${String(info.timestamp)} [JupyterSSHProxy] ${info.level}: ${conn}${String(info.message)}`;
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

/** A listening address as operators type it: `[::]:2222` for IPv6, `127.0.0.1:2222` for IPv4. */
export function formatListenAddress(address: net.AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}
