// ssh2's own client, for what OpenSSH's will not send: any user name, a
// forged signature (through an agent of the test's making).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface Ssh2Client {
  on(event: 'ready', listener: () => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  connect(options: Record<string, unknown>): void;
  end(): void;
}

/** The part of ssh2's client API the tests use (ssh2 ships no types). */
const ssh2 = require('ssh2') as { BaseAgent: new () => object; Client: new () => Ssh2Client };

/** ssh2's base class for agents: a subclass gives getIdentities and sign. */
export const BaseAgent = ssh2.BaseAgent;

/** One attempt of ssh2's authHandler list: each may name another user. */
export interface Ssh2AuthAttempt {
  type: 'publickey' | 'password';
  username: string;
  key?: string | Buffer;
  password?: string;
}

/**
 * Logs in as `username` with `password`, `agent` or the attempts in
 * `authHandler` (no keyboard-interactive) and ends the connection; resolves
 * with 'logged in' or ssh2's error message.
 */
export async function ssh2Login(
  port: number,
  username: string,
  auth: { password?: string; agent?: object; authHandler?: Ssh2AuthAttempt[] },
): Promise<string> {
  const client = new ssh2.Client();
  const outcome = await new Promise<string>((resolve) => {
    client.on('ready', () => resolve('logged in'));
    client.on('error', (err) => resolve(err.message));
    client.connect({ host: '127.0.0.1', port, username, ...auth, tryKeyboard: false, readyTimeout: 30_000 });
  });
  client.end();
  return outcome;
}
