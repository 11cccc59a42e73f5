/**
 * Key logins with `--upstream websocket` (`--authorized-keys-file`): the
 * keys users keep in their server's home, where their sessions run, read
 * through the server extension's `ssh-proxy/authorized-keys` endpoint
 * (as the server's user, with sshd's StrictModes checks) while the server
 * runs. The Hub machine knows nothing of the homes of DockerSpawner's or
 * KubeSpawner's servers.
 *
 * A stopped server cannot be asked, and key logins that cannot start a
 * server would be of little use where idle servers are culled. So the keys
 * last read from each server are kept (in memory), and one of them may start
 * the server; the login then goes on only if the started server's file still
 * lets it in (AuthorizedKeys.recheck). A key removed while the server was
 * stopped can start it, but logs in to nothing; --revoked-keys refuses a key
 * before anything starts.
 */
import http from 'node:http';
import https from 'node:https';
import { parseAuthorizedKeys, type AuthorizedKey, type AuthorizedKeys, type AuthorizedKeysSource } from './authorizedkeys.js';
import type { LoginTarget } from './authorizer.js';
import type { HubClient } from './hub.js';
import { handshakeFailure, serverUrl } from './websocketupstream.js';

/** The server extension's endpoint, under a server's URL. */
const ENDPOINT = 'ssh-proxy/authorized-keys';
/** Servers whose keys are kept for when they are stopped; the least recently read are forgotten first. */
const KEPT_SERVERS = 10_000;
/** The largest answer taken: the extension serves files up to 1 MiB, which JSON may escape to several times that. */
const MAX_ANSWER_BYTES = 8 * 1024 * 1024;

export interface ServerAuthorizedKeysOptions {
  /** Where the Hub's proxy serves users' servers (the URL argument). */
  serversUrl: string;
  /** Sent as `Authorization: token ...`: it needs access to the servers, and read:servers for whether they run. */
  serviceToken: string;
  /** A private CA for https:// (--hub-ca). */
  ca?: Buffer;
  timeoutMs: number;
  /** sshd's AuthorizedKeysFile, as the extension expands it in the server: relative to the home, `%h`, `%u`. */
  keysFile: string;
  /** Asked whether a server runs. */
  hub: Pick<HubClient, 'user'>;
}

/** What the extension answers (server-extension/jupyter_ssh_proxy_server). */
interface KeysAnswer {
  user: string;
  file: string;
  text?: string;
  problem?: string;
}

/** One read of a server's file: its keys, or why there are none (for the log, and one line for the user). */
type Read = { keys: AuthorizedKeys } | { problem: string; notice: string };

/** Whether two lines let in the same logins with the same session. */
function sameLine(a: AuthorizedKey, b: AuthorizedKey): boolean {
  return (
    a.blob.equals(b.blob) &&
    Boolean(a.certAuthority) === Boolean(b.certAuthority) &&
    a.principals === b.principals &&
    a.from === b.from &&
    a.expiresAt === b.expiresAt &&
    a.sessionOptions?.text === b.sessionOptions?.text &&
    a.securityKeyPolicy.touchRequired === b.securityKeyPolicy.touchRequired &&
    a.securityKeyPolicy.verifyRequired === b.securityKeyPolicy.verifyRequired
  );
}

/**
 * GET `url`: status and body, at most MAX_ANSWER_BYTES, within `timeoutMs`;
 * no redirect is followed. Not got (the Hub client's): it has no cap on an
 * answer's size, and the answer comes from a server its user controls.
 */
function get(url: URL, headers: Record<string, string>, ca: Buffer | undefined, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = (url.protocol === 'https:' ? https : http).get(url, { headers, ca }, (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_ANSWER_BYTES) request.destroy(new Error(`an answer larger than ${MAX_ANSWER_BYTES} bytes`));
        else chunks.push(chunk);
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    const timer = setTimeout(() => request.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    request.on('close', () => clearTimeout(timer));
    request.on('error', reject);
  });
}

export class ServerAuthorizedKeys implements AuthorizedKeysSource {
  /** The last keys read from each server, by `user\0server`; Map order is read order. */
  private readonly kept = new Map<string, AuthorizedKeys>();
  /** The file as users are told about it. */
  private readonly shownFile: string;

  constructor(readonly options: Readonly<ServerAuthorizedKeysOptions>) {
    this.shownFile = options.keysFile.startsWith('/') || options.keysFile.startsWith('%') ? options.keysFile : `~/${options.keysFile}`;
  }

  async authorizedKeys(target: LoginTarget): Promise<AuthorizedKeys> {
    const user = await this.options.hub.user(target.hubUser, this.options.serviceToken);
    // No such Hub user: a token may still say something else, and is told so then.
    if (user === null) return { keys: [], problems: [] };
    if (user.servers?.[target.server]?.ready) {
      const read = await this.read(target);
      return 'keys' in read ? read.keys : { keys: [], problems: [read.problem], notice: read.notice };
    }
    const kept = this.kept.get(keyOf(target));
    if (kept === undefined) {
      return {
        keys: [],
        problems: [`the server ${target.hubUser}/${target.server} is not running, and its ${this.options.keysFile} was not read since this daemon started`],
        notice: `Key logins read ${this.shownFile} in your server, which is not running: start it from JupyterHub, or log in with your token`,
      };
    }
    return { ...kept, recheck: (line) => this.recheck(target, line) };
  }

  /** Once the server runs: why `line`, read while it was stopped, no longer lets in; undefined if it does. */
  private async recheck(target: LoginTarget, line: AuthorizedKey): Promise<string | undefined> {
    const read = await this.read(target);
    if (!('keys' in read)) return `Your key could not be checked against ${this.shownFile} in your server (${read.notice})`;
    if (read.keys.keys.some((fresh) => sameLine(fresh, line))) return undefined;
    return `Your key is no longer in ${this.shownFile} in your server (or its line changed)`;
  }

  /** Reads the file from the running server; keeps what it says, unless the server could not be asked. */
  private async read(target: LoginTarget): Promise<Read> {
    const url = serverUrl(this.options.serversUrl, target, ENDPOINT);
    let answer: { status: number; body: string };
    try {
      answer = await get(
        url,
        { Authorization: `token ${this.options.serviceToken}`, 'X-SSH-Proxy-Keys-File': this.options.keysFile, 'User-Agent': 'jupyter-ssh-proxy' },
        this.options.ca,
        this.options.timeoutMs,
      );
    } catch (err) {
      return { problem: `cannot read ${url.href}: ${(err as Error).message}`, notice: handshakeFailure(503) };
    }
    if (answer.status !== 200) {
      const problem = `${url.href} answered HTTP ${answer.status}`;
      // No endpoint: an image without the extension (or with one older than key logins) has no keys to keep.
      if (answer.status === 404) this.keep(target, { keys: [], problems: [] });
      return { problem, notice: handshakeFailure(answer.status) };
    }
    let body: Partial<KeysAnswer>;
    try {
      body = JSON.parse(answer.body) as Partial<KeysAnswer>;
    } catch {
      body = {};
    }
    if (typeof body.user !== 'string' || typeof body.file !== 'string' || (typeof body.text !== 'string') === (typeof body.problem !== 'string')) {
      return { problem: `${url.href} answered with something that is not the extension's list of keys`, notice: handshakeFailure(0) };
    }
    // What the server says goes to the log: the user may run their own extension, so it is made printable and short.
    const source = `${printable(body.file)} in the server ${target.hubUser}/${target.server}`;
    const keys: AuthorizedKeys =
      body.text !== undefined
        ? { ...parseAuthorizedKeys(body.text, source), account: body.user }
        : { keys: [], problems: [`${source}: refused, ${printable(body.problem!)}`], account: body.user };
    this.keep(target, keys);
    return { keys };
  }

  private keep(target: LoginTarget, keys: AuthorizedKeys): void {
    const key = keyOf(target);
    this.kept.delete(key);
    // Kept without the problems, which were logged when read.
    this.kept.set(key, { ...keys, problems: [] });
    if (this.kept.size > KEPT_SERVERS) this.kept.delete(this.kept.keys().next().value!);
  }
}

/** `text` fit for one log line. */
function printable(text: string): string {
  const line = text.replace(/[^\x20-\x7e]/g, '?');
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
}

function keyOf(target: LoginTarget): string {
  return `${target.hubUser}\0${target.server}`;
}
