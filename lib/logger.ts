/**
 * winston logging in configurable-http-proxy's style:
 *   12:34:56.789 [JupyterSSHProxy] info: message
 * Lines about one connection carry its short id and source address.
 * Nothing here ever receives a token, password or private key.
 */
import winston from 'winston';

export type Logger = winston.Logger;

export function createLogger(level: string): Logger {
  const text = winston.format.printf((info) => {
    const conn = info.conn ? `[${String(info.conn)}] ` : '';
    return `${String(info.timestamp)} [JupyterSSHProxy] ${info.level}: ${conn}${String(info.message)}`;
  });
  return winston.createLogger({
    level,
    format: winston.format.combine(winston.format.timestamp({ format: 'HH:mm:ss.SSS' }), text),
    transports: [new winston.transports.Console()],
  });
}
