/**
 * `--upstream websocket`: the session runs in the user's Jupyter server
 * itself, wherever its spawner put it (a container of DockerSpawner or
 * KubeSpawner, another host), not on the Hub's machine. The daemon opens a
 * WebSocket to the server's `ssh-proxy/connect` endpoint through the Hub's
 * proxy, where the server extension in server-extension/ runs `sshd -i` as
 * the server's user; the WebSocket's binary messages carry the SSH stream.
 *
 * The request is authorized by the Hub like any request to the server: with
 * the service token (JUPYTERHUB_API_TOKEN, which needs `access:servers`).
 * The daemon's login key and the login's session options go in request
 * headers; the host key to expect and the user to log in as come back in
 * response headers, over the connection the token was sent on, so they are
 * as trustworthy as the Hub's own address (use https:// across machines).
 */
import WebSocket, { createWebSocketStream } from 'ws';
import type { SessionOptions } from './authorizedkeys.js';
import type { LoginTarget } from './authorizer.js';
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
}

/** The server extension's endpoint, under a server's URL. */
const ENDPOINT = 'ssh-proxy/connect';
/** The largest message taken from the extension: it sends what one read of sshd's output gives (64 KiB). */
const MAX_MESSAGE_BYTES = 1024 * 1024;
/** A user name the extension may report: a unix name, nothing sshd could read otherwise. */
const USER_NAME = /^[a-z_][a-z0-9_.-]{0,63}\$?$/i;

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
    const url = this.endpoint(target);
    const socket = new WebSocket(url, {
      headers: {
        Authorization: `token ${this.options.serviceToken}`,
        'X-SSH-Proxy-Key': this.clientPublicKey,
        ...(sessionOptions === undefined ? {} : { 'X-SSH-Proxy-Options': sessionOptions.text }),
      },
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
    const opened = await new Promise<{ hostKey: Buffer; username: string }>((resolve, reject) => {
      let answer: { hostKey?: string; user?: string } = {};
      socket.once('upgrade', (res) => {
        answer = { hostKey: res.headers['x-ssh-host-key'] as string | undefined, user: res.headers['x-ssh-user'] as string | undefined };
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
        const [type, encoded, more] = (answer.hostKey ?? '').split(' ');
        const hostKey = encoded === undefined || more !== undefined ? undefined : parseKey(`${type} ${encoded}`);
        if (hostKey === undefined || hostKey instanceof Error || answer.user === undefined || !USER_NAME.test(answer.user)) {
          log('warn', `${url} sent no usable X-SSH-Host-Key and X-SSH-User headers`);
          socket.terminate();
          return reject(new UpstreamError(handshakeFailure(0)));
        }
        resolve({ hostKey: hostKey.getPublicSSH(), username: answer.user });
      });
    });
    const stream = createWebSocketStream(socket);
    // A dropped WebSocket ends the stream; the leg sees the end.
    stream.on('error', (err: Error) => log('debug', `WebSocket to ${url}: ${err.message}`));
    return {
      input: stream,
      output: stream,
      username: opened.username,
      clientKey: this.clientKey,
      hostKey: opened.hostKey,
      explainFailure: async () => {
        log('warn', `the sshd behind ${url} refused the login as ${opened.username}`);
        return sessionOptions !== undefined
          ? `The SSH server in your server refused the options of this login (${sessionOptions.names.join(', ')}); check their values`
          : 'The SSH server in your server refused the login; ask your JupyterHub administrator';
      },
      close: () => {
        stream.end();
        socket.close();
        // A peer that does not answer the close: gone after the grace.
        setTimeout(() => socket.terminate(), 2000).unref();
      },
    };
  }
}
