/**
 * `--upstream websocket`: the session runs in the user's Jupyter server
 * itself, wherever its spawner put it (a container of DockerSpawner or
 * KubeSpawner, another host), not on the Hub's machine. The daemon opens a
 * WebSocket to the server's `ssh-proxy/connect` endpoint through the Hub's
 * proxy, where the server extension in server-extension/ runs `sshd -i` as
 * the server's user; the WebSocket's binary messages carry the SSH stream.
 *
 * The daemon asks for the raw stream (`X-SSH-Proxy-Stream: raw`): an
 * extension that can, says so in its answer to the upgrade, and the
 * connection then carries the SSH bytes themselves, without WebSocket
 * frames, from a socket that is the session's sshd's own standard input and
 * output. Neither end frames anything, the server's Python is out of the
 * data path, and over plain TCP the daemon relays the connection's packets
 * in its native loop, as those of the local sshd. The Hub's proxy, like any
 * proxy of WebSockets, passes the bytes after the upgrade on as they come.
 * An extension that answers with a WebSocket (an older one, or a server on
 * TLS of its own) gets one, on a new connection; `--websocket-frames` asks
 * for messages from the start, for a front proxy that reads the frames.
 *
 * The request is authorized by the Hub like any request to the server: with
 * the service token (JUPYTERHUB_API_TOKEN, which needs `access:servers`).
 * The daemon's login key and the login's session options go in request
 * headers; the host key to expect and the user to log in as come back in
 * response headers, over the connection the token was sent on, so they are
 * as trustworthy as the Hub's own address (use https:// across machines).
 */
import crypto from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { TLSSocket } from 'node:tls';
import WebSocket, { createWebSocketStream } from 'ws';
import type { SessionOptions } from './authorizedkeys.js';
import type { LoginTarget } from './authorizer.js';
import { adoptWithSharedReads } from './sharedreads.js';
import { generateKeyPair, parseKey, type ParsedKey } from './ssh2internals.js';
import { UpstreamError, type Upstream, type UpstreamConnection } from './upstream.js';

export interface WebSocketUpstreamOptions {
  /** Where users reach the Hub and its servers: the proxy's origin and base URL (`http://127.0.0.1:8000/`). */
  serversUrl: string;
  /** Sent as `Authorization: token ...`; it must have access to the servers. */
  serviceToken: string;
  /** A private CA for https:// (--hub-ca). */
  ca?: Buffer;
  /** How long the WebSocket handshake may take. */
  timeoutMs: number;
  /** Never ask for the raw stream (--websocket-frames). */
  frames?: boolean;
  /** How long a server that answered with a WebSocket gets asked for one straight away (default WEBSOCKET_ANSWER_MEMORY_MS). */
  webSocketAnswerMemoryMs?: number;
}

/** The server extension's endpoint, under a server's URL. */
const ENDPOINT = 'ssh-proxy/connect';
/** The largest message taken from the extension: it sends what one read of sshd's output gives (256 KiB). */
const MAX_MESSAGE_BYTES = 1024 * 1024;
/** A user name the extension may report: a unix name, nothing sshd could read otherwise. */
const USER_NAME = /^[a-z_][a-z0-9_.-]{0,63}\$?$/i;
/** RFC 6455's key for Sec-WebSocket-Accept. */
const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** How long a closed connection's peer has to close its end. */
const CLOSE_GRACE_MS = 2000;
/**
 * How long the daemon remembers that a server answered the raw stream's request with a WebSocket (an older extension,
 * or a server with TLS of its own), and opens one straight away: one handshake, and one sshd started, per login instead
 * of two. Long enough for the logins of a working session (VS Code opens several); short enough that a server started
 * again from an updated image gets the raw stream soon.
 */
export const WEBSOCKET_ANSWER_MEMORY_MS = 10 * 60_000;

/** What the extension's answer to the upgrade says about the session: the host key to expect, the user to log in as. */
interface Session {
  hostKey: Buffer;
  username: string;
}

/** The session the extension's response headers name, or undefined when they name none that is usable. */
function sessionOf(headers: IncomingMessage['headers']): Session | undefined {
  const user = headers['x-ssh-user'];
  const [type, encoded, more] = String(headers['x-ssh-host-key'] ?? '').split(' ');
  const hostKey = encoded === undefined || more !== undefined ? undefined : parseKey(`${type} ${encoded}`);
  if (hostKey === undefined || hostKey instanceof Error || typeof user !== 'string' || !USER_NAME.test(user)) return undefined;
  return { hostKey: hostKey.getPublicSSH(), username: user };
}

/** `endpoint` under `target`'s server, where `serversUrl` (the Hub's proxy) serves it: `<URL>/user/NAME/[SERVER/]endpoint`. */
export function serverUrl(serversUrl: string, target: LoginTarget, endpoint: string): URL {
  const base = new URL(serversUrl);
  const server = target.server === '' ? '' : `${encodeURIComponent(target.server)}/`;
  return new URL(`user/${encodeURIComponent(target.hubUser)}/${server}${endpoint}`, base.href.endsWith('/') ? base : `${base.href}/`);
}

/** What a failed handshake means for the user, one line; the log gets the status. */
export function handshakeFailure(status: number): string {
  switch (status) {
    case 404:
      return 'Your server has no SSH endpoint: the jupyter_ssh_proxy_server extension is not installed or not enabled in its image; ask your JupyterHub administrator';
    case 403:
    case 401:
      return 'Your server refused the SSH proxy (its service token needs access:servers); ask your JupyterHub administrator';
    case 503:
      return 'Your server is not reachable through the Hub; try again in a moment';
    default:
      return 'Your server refused the SSH connection; ask your JupyterHub administrator';
  }
}

export class WebSocketUpstream implements Upstream {
  private readonly clientKey: ParsedKey;
  private readonly clientPublicKey: string;
  /** Endpoints that answered the raw stream's request with a WebSocket, and until when that is remembered. */
  private readonly answeredWithWebSocket = new Map<string, number>();

  constructor(private readonly options: WebSocketUpstreamOptions) {
    const pair = generateKeyPair('ed25519');
    const key = parseKey(pair.private);
    if (key instanceof Error) throw key;
    this.clientKey = key;
    this.clientPublicKey = pair.public.trim().split(' ').slice(0, 2).join(' ');
  }

  async precheck(): Promise<string | undefined> {
    return undefined;
  }

  /** The WebSocket URL of `target`'s server endpoint. */
  endpoint(target: LoginTarget): string {
    const url = serverUrl(this.options.serversUrl, target, ENDPOINT);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  async connect(target: LoginTarget, log: (level: string, message: string) => void, sessionOptions?: SessionOptions): Promise<UpstreamConnection> {
    const headers: Record<string, string> = {
      Authorization: `token ${this.options.serviceToken}`,
      'X-SSH-Proxy-Key': this.clientPublicKey,
      ...(sessionOptions === undefined ? {} : { 'X-SSH-Proxy-Options': sessionOptions.text }),
    };
    const url = this.endpoint(target);
    if (!this.options.frames && !this.answersWithWebSocket(url)) {
      const raw = await this.openRawStream(target, headers, log);
      if (raw !== undefined) {
        const { socket, session } = raw;
        return this.connection(socket, socket, session, raw.url, log, sessionOptions, () => {
          socket.end();
          setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
        });
      }
      this.rememberWebSocketAnswer(url);
    }
    const socket = new WebSocket(url, {
      headers,
      ca: this.options.ca,
      handshakeTimeout: this.options.timeoutMs,
      maxPayload: MAX_MESSAGE_BYTES,
      perMessageDeflate: false,
      // RFC 6455's mask keeps a browser's script from choosing the bytes an
      // intermediary sees; these are SSH ciphertext, which no script chooses.
      // An all-zero mask (ws's documented use of generateMask) spares XORing
      // every uploaded byte in JavaScript.
      generateMask: (mask: Buffer) => mask.fill(0),
      followRedirects: false,
    });
    const session = await new Promise<Session>((resolve, reject) => {
      let answered: Session | undefined;
      socket.once('upgrade', (res) => {
        answered = sessionOf(res.headers);
      });
      socket.once('unexpected-response', (_req, res) => {
        log('warn', `${url} answered HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trim());
        res.resume();
        socket.terminate();
        reject(new UpstreamError(handshakeFailure(res.statusCode ?? 0)));
      });
      socket.once('error', (err) => {
        log('warn', `cannot open ${url}: ${err.message}`);
        reject(new UpstreamError(handshakeFailure(503)));
      });
      socket.once('open', () => {
        if (answered === undefined) {
          log('warn', `${url} sent no usable X-SSH-Host-Key and X-SSH-User headers`);
          socket.terminate();
          return reject(new UpstreamError(handshakeFailure(0)));
        }
        resolve(answered);
      });
    });
    const stream = createWebSocketStream(socket);
    // A dropped WebSocket ends the stream; the leg sees the end.
    stream.on('error', (err: Error) => log('debug', `WebSocket to ${url}: ${err.message}`));
    return this.connection(stream, stream, session, url, log, sessionOptions, () => {
      stream.end();
      socket.close();
      // A peer that does not answer the close: gone after the grace.
      setTimeout(() => socket.terminate(), CLOSE_GRACE_MS).unref();
    });
  }

  /** Whether `url` answered the raw stream's request with a WebSocket recently. */
  private answersWithWebSocket(url: string): boolean {
    const until = this.answeredWithWebSocket.get(url);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.answeredWithWebSocket.delete(url);
    return false;
  }

  private rememberWebSocketAnswer(url: string): void {
    const now = Date.now();
    // Servers come and go: what has expired goes, so the map holds only the servers of the last while.
    for (const [known, until] of this.answeredWithWebSocket) if (until <= now) this.answeredWithWebSocket.delete(known);
    this.answeredWithWebSocket.set(url, now + (this.options.webSocketAnswerMemoryMs ?? WEBSOCKET_ANSWER_MEMORY_MS));
  }

  /**
   * The upgrade asking for the raw stream. Resolves with the connection's
   * socket once the extension has answered that it is one, or undefined
   * when it answered with a WebSocket (then closed): the caller opens one.
   */
  private openRawStream(
    target: LoginTarget,
    headers: Record<string, string>,
    log: (level: string, message: string) => void,
  ): Promise<{ socket: Socket; session: Session; url: string } | undefined> {
    const url = serverUrl(this.options.serversUrl, target, ENDPOINT);
    // Logged as the WebSocket's address, which this is.
    const shown = this.endpoint(target);
    const key = crypto.randomBytes(16).toString('base64');
    const accept = crypto.createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64');
    const request = (url.protocol === 'https:' ? https : http).request(url, {
      headers: {
        ...headers,
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': key,
        'X-SSH-Proxy-Stream': 'raw',
      },
      ca: this.options.ca,
      agent: false,
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => request.destroy(new Error(`no answer in ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
      const fail = (why: string, status: number) => {
        clearTimeout(timer);
        log('warn', why);
        reject(new UpstreamError(handshakeFailure(status)));
      };
      request.once('error', (err) => fail(`cannot open ${shown}: ${err.message}`, 503));
      request.once('response', (res) => {
        res.resume();
        fail(`${shown} answered HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trim(), res.statusCode ?? 0);
      });
      request.once('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
        clearTimeout(timer);
        if (res.headers['sec-websocket-accept'] !== accept) {
          socket.destroy();
          return fail(`${shown} answered the upgrade without the Sec-WebSocket-Accept of its key`, 0);
        }
        const session = sessionOf(res.headers);
        if (session === undefined) {
          socket.destroy();
          return fail(`${shown} sent no usable X-SSH-Host-Key and X-SSH-User headers`, 0);
        }
        if (res.headers['x-ssh-proxy-stream'] !== 'raw') {
          log('debug', `${shown} answered with a WebSocket, not the raw stream: its extension is older than this daemon, or the server has TLS of its own`);
          socket.destroy();
          return resolve(undefined);
        }
        socket.setNoDelay(true);
        // Plain TCP with nothing read past the answer reads into the shared buffer, for the native relay (lib/leg.ts).
        // sshd speaks first, though: its version line may have come with the answer.
        const stream = socket instanceof TLSSocket || head.length > 0 ? socket : adoptWithSharedReads(socket);
        if (head.length > 0) {
          log('debug', `${shown}: sshd's first bytes came with the answer; this connection's packets go through Node, not the native relay`);
          stream.unshift(head);
        }
        // Until the leg listens: a reset meanwhile must not go unheard. The leg sees the end.
        stream.on('error', (err: Error) => log('debug', `${shown}: ${err.message}`));
        resolve({ socket: stream, session, url: shown });
      });
      request.end();
    });
  }

  private connection(
    input: Readable,
    output: Writable,
    session: Session,
    url: string,
    log: (level: string, message: string) => void,
    sessionOptions: SessionOptions | undefined,
    close: () => void,
  ): UpstreamConnection {
    return {
      input,
      output,
      username: session.username,
      clientKey: this.clientKey,
      hostKey: session.hostKey,
      explainFailure: async () => {
        log('warn', `the sshd behind ${url} refused the login as ${session.username}`);
        return sessionOptions !== undefined
          ? `The SSH server in your server refused the options of this login (${sessionOptions.names.join(', ')}); check their values`
          : 'The SSH server in your server refused the login; ask your JupyterHub administrator';
      },
      close,
    };
  }
}
