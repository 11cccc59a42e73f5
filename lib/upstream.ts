/**
 * Where an authorized login is carried on. The relay knows nothing about
 * routing: it asks an `Upstream` for a byte stream that speaks SSH, plus the
 * credentials to log in on it (sshpiper's split between pipe and routing).
 */
import type { Readable, Writable } from 'node:stream';
import type { SessionOptions } from './authorizedkeys.js';
import type { LoginTarget } from './authorizer.js';
import type { ParsedKey } from './ssh2internals.js';

export interface UpstreamConnection {
  /** The SSH byte stream from the upstream server. */
  readonly input: Readable;
  /** The SSH byte stream to the upstream server. */
  readonly output: Writable;
  /** The user name to log in as. */
  readonly username: string;
  /** The key the proxy authenticates with. */
  readonly clientKey: ParsedKey;
  /** The upstream host key blob (SSH wire format) the proxy expects. */
  readonly hostKey: Buffer;
  /**
   * Why the upstream refused the login or went away, as one line for the
   * user; details go to the log.
   */
  explainFailure(): Promise<string>;
  /** Ends the upstream connection and reaps whatever ran it. */
  close(): void;
}

export interface Upstream {
  /**
   * Cheap checks before anything is started for `target` (such as the Hub
   * server): a one-line reason the login cannot work, or undefined.
   */
  precheck(target: LoginTarget): Promise<string | undefined>;
  /**
   * Opens a connection for `target`; rejects with an `UpstreamError` the user
   * may read. `sessionOptions` come with a key login whose authorized_keys
   * line has them (`restrict`, `command=`, ...): the upstream must apply them
   * to the session as sshd does, or refuse.
   */
  connect(target: LoginTarget, log: (level: string, message: string) => void, sessionOptions?: SessionOptions): Promise<UpstreamConnection>;
}

/** A failure whose message is one line fit for the user. */
export class UpstreamError extends Error {}
