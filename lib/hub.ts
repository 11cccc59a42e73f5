/**
 * A small JupyterHub REST API client (got): timeouts on every call, retries
 * only for idempotent GETs, TLS verification on (with an optional private CA),
 * and a cap on concurrent requests so that a flood of logins cannot flood the
 * Hub. Tokens go into the Authorization header and nowhere else: never into a
 * URL, an error message or a log line.
 */
import type { Got, Response } from 'got';
import { importWithLazyListFormat } from './lazylistformat.js';

// got's dependencies build ICU formatters at load that cost ~5 MiB (lazylistformat.ts).
const { default: got, RequestError } = await importWithLazyListFormat(() => import('got'));

/** The part of `GET /hub/api/user` the proxy uses. */
export interface HubIdentity {
  name: string;
  kind?: string;
  admin?: boolean;
  scopes?: string[];
}

/** A server in `GET /hub/api/users/NAME` (read:servers). */
export interface HubServer {
  name: string;
  ready: boolean;
  pending: 'spawn' | 'stop' | null;
  url?: string;
}

/** The part of `GET /hub/api/users/NAME` the proxy uses. */
export interface HubUser {
  name: string;
  groups?: string[];
  /** Absent when the token lacks read:servers. */
  servers?: Record<string, HubServer>;
}

/** One event of a spawn's progress stream. */
export interface ProgressEvent {
  progress?: number;
  message?: string;
  ready?: boolean;
  failed?: boolean;
}

/** The Hub could not answer (down, slow, 5xx, garbage). Users see a generic line. */
export class HubUnavailableError extends Error {}

export interface HubClientOptions {
  /** The API root, e.g. http://127.0.0.1:8081/hub/api */
  apiUrl: string;
  timeoutMs: number;
  ca?: string | Buffer;
  /** Requests in flight at most; more wait their turn. */
  maxConcurrent: number;
  /** Told about every request: which endpoint, how long, whether it failed (no answer, 5xx, garbage). */
  observe?: (endpoint: HubEndpoint, seconds: number, failed: boolean) => void;
}

/** The Hub API calls the proxy makes, as metric labels. */
export type HubEndpoint = 'version' | 'user' | 'users' | 'start' | 'progress' | 'activity';

/** A counting semaphore. */
class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/** Node's codes for a certificate chain it cannot verify: the Hub's authority is not one it trusts, which --hub-ca fixes. */
const UNTRUSTED_CERTIFICATE = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
]);

function reasonOf(err: unknown): string {
  // got's errors carry the request options (and so the token); keep only the reason.
  if (!(err instanceof RequestError)) return 'request failed';
  const code = err.code ?? err.name;
  return UNTRUSTED_CERTIFICATE.has(code) ? `${code}: the Hub's TLS certificate is not trusted; give its certificate authority with --hub-ca` : code;
}

/** The API URL for a Hub's public URL (`http://hub/` → `http://hub/hub/api`). */
export function apiUrlOf(publicUrl: string): string {
  return new URL('hub/api', publicUrl.endsWith('/') ? publicUrl : `${publicUrl}/`).toString();
}

export class HubClient {
  private readonly http: Got;
  private readonly limiter: Limiter;
  private readonly observe: NonNullable<HubClientOptions['observe']>;
  private readonly apiUrl: string;

  constructor(options: HubClientOptions) {
    this.observe = options.observe ?? (() => undefined);
    this.http = got.extend({
      prefixUrl: options.apiUrl.endsWith('/') ? options.apiUrl : `${options.apiUrl}/`,
      timeout: { request: options.timeoutMs },
      // Retry only idempotent GETs, only on answers that say "try again" and
      // on dropped connections, and quickly: a user is waiting at a prompt.
      // A timeout is not retried: the Hub already had its chance.
      retry: {
        limit: 2,
        methods: ['GET'],
        statusCodes: [502, 503, 504],
        errorCodes: ['ECONNRESET', 'ECONNREFUSED', 'EPIPE'],
        backoffLimit: 500,
      },
      throwHttpErrors: false,
      // A redirect means the proxy was given an address in front of the Hub
      // (an HTTPS redirect, The Littlest JupyterHub's traefik): got would
      // follow it to another host without the token, and the Hub's 403
      // would read as a rejected token. Said as what it is instead.
      followRedirect: false,
      https: options.ca ? { certificateAuthority: options.ca } : {},
      headers: { 'user-agent': 'jupyter-ssh-proxy' },
    });
    this.limiter = new Limiter(options.maxConcurrent);
    this.apiUrl = options.apiUrl;
  }

  private async request(
    endpoint: HubEndpoint,
    method: 'GET' | 'POST',
    path: string,
    token: string | undefined,
    json?: unknown,
    timeoutMs?: number,
  ): Promise<Response<string>> {
    const started = performance.now();
    let response: Response<string>;
    try {
      response = await this.limiter.run(() =>
        this.http(path, {
          method,
          headers: token === undefined ? {} : { authorization: `token ${token}` },
          ...(json === undefined ? {} : { json }),
          ...(timeoutMs === undefined ? {} : { timeout: { request: timeoutMs } }),
        }),
      );
    } catch (err) {
      this.observe(endpoint, (performance.now() - started) / 1000, true);
      throw new HubUnavailableError(`JupyterHub request ${method} /${endpoint} failed: ${reasonOf(err)}`);
    }
    const redirect = response.statusCode >= 300 && response.statusCode < 400;
    this.observe(endpoint, (performance.now() - started) / 1000, redirect || response.statusCode >= 500);
    if (redirect) throw new HubUnavailableError(this.redirectProblem(response, `${method} /${endpoint}`));
    return response;
  }

  private redirectProblem(response: Response, what: string): string {
    return (
      `${this.apiUrl} answered ${what} with a redirect (HTTP ${response.statusCode}) to ${response.headers.location ?? 'nowhere'}: ` +
      "give the proxy an address where the Hub answers itself (The Littlest JupyterHub's: http://127.0.0.1:15001)"
    );
  }

  /** The Hub's version (`GET /hub/api/`, no token needed): whether the Hub answers at the address the proxy was given. */
  async version(): Promise<string> {
    const response = await this.request('version', 'GET', '', undefined);
    if (response.statusCode !== 200) throw new HubUnavailableError(`${this.apiUrl} answered HTTP ${response.statusCode} to GET /hub/api/`);
    const { version } = HubClient.parse<{ version?: unknown }>(response, 'GET /hub/api/');
    if (typeof version !== 'string') throw new HubUnavailableError(`${this.apiUrl} answered GET /hub/api/ without a JupyterHub version: is it a JupyterHub?`);
    return version;
  }

  private static parse<T>(response: Response<string>, what: string): T {
    try {
      return JSON.parse(response.body) as T;
    } catch {
      throw new HubUnavailableError(`JupyterHub answered ${what} with something that is not JSON`);
    }
  }

  /**
   * Who owns `token`, with the token's scopes; null when the Hub rejects the
   * token (unknown, expired, revoked).
   */
  async identify(token: string): Promise<HubIdentity | null> {
    const response = await this.request('user', 'GET', 'user', token);
    if (response.statusCode === 401 || response.statusCode === 403) return null;
    if (response.statusCode !== 200) {
      throw new HubUnavailableError(`JupyterHub answered HTTP ${response.statusCode} to GET /user`);
    }
    const body = HubClient.parse<HubIdentity>(response, 'GET /user');
    if (typeof body?.name !== 'string') throw new HubUnavailableError('JupyterHub answered GET /user without a user name');
    return body;
  }

  /** A user's model; null if there is no such user (or the token may not see it). */
  async user(name: string, token: string): Promise<HubUser | null> {
    // JupyterHub 3 lists stopped servers only when asked to.
    const response = await this.request('users', 'GET', `users/${encodeURIComponent(name)}?include_stopped_servers`, token);
    if (response.statusCode === 404 || response.statusCode === 403) return null;
    if (response.statusCode !== 200) {
      throw new HubUnavailableError(`JupyterHub answered HTTP ${response.statusCode} to GET /users/NAME`);
    }
    return HubClient.parse<HubUser>(response, 'GET /users/NAME');
  }

  private static serverPath(user: string, server: string): string {
    const base = `users/${encodeURIComponent(user)}`;
    return server === '' ? `${base}/server` : `${base}/servers/${encodeURIComponent(server)}`;
  }

  /**
   * `POST …/server(s/NAME)`: the status code and the Hub's message. The Hub
   * may hold the answer back while the spawn starts, hence its own timeout.
   */
  async startServer(user: string, server: string, token: string, timeoutMs: number): Promise<{ status: number; message: string }> {
    const response = await this.request('start', 'POST', HubClient.serverPath(user, server), token, {}, timeoutMs);
    let message = '';
    try {
      message = String((JSON.parse(response.body) as { message?: unknown }).message ?? '');
    } catch {
      // 201/202 bodies are empty or plain text
    }
    return { status: response.statusCode, message };
  }

  /**
   * Follows `GET …/progress` (an event stream), calling `onEvent` for each
   * event until the stream ends or `signal` aborts. Resolves with the HTTP
   * status: 200 when the stream was read, 400 when no spawn is pending.
   */
  async followProgress(
    user: string,
    server: string,
    token: string,
    onEvent: (event: ProgressEvent) => void,
    signal: AbortSignal,
  ): Promise<number> {
    const path = `${HubClient.serverPath(user, server)}/progress`;
    const started = performance.now();
    const status = await this.limiter.run(
      () =>
        new Promise<number>((resolve, reject) => {
          const stream = this.http.stream(path, {
            headers: { authorization: `token ${token}`, accept: 'text/event-stream' },
            // The stream lives as long as the spawn; `signal` bounds it.
            timeout: { request: undefined, response: 30_000 },
            retry: { limit: 0 },
            signal,
          });
          let status = 0;
          let buffered = '';
          stream.setEncoding('utf8');
          stream.on('response', (response: Response) => {
            status = response.statusCode;
            if (status >= 300 && status < 400) {
              stream.destroy();
              this.observe('progress', (performance.now() - started) / 1000, true);
              reject(new HubUnavailableError(this.redirectProblem(response, 'GET /progress')));
            } else if (status !== 200) {
              stream.destroy();
              resolve(status);
            }
          });
          stream.on('data', (text: string) => {
            if (status !== 200) return;
            buffered += text;
            let end;
            while ((end = buffered.indexOf('\n')) >= 0) {
              const line = buffered.slice(0, end).trim();
              buffered = buffered.slice(end + 1);
              if (!line.startsWith('data:')) continue;
              try {
                onEvent(JSON.parse(line.slice(5)) as ProgressEvent);
              } catch {
                // a malformed event; the next one may be fine
              }
            }
          });
          stream.on('end', () => resolve(status));
          stream.on('error', (err: unknown) => {
            if (signal.aborted) resolve(status);
            else {
              this.observe('progress', (performance.now() - started) / 1000, true);
              reject(new HubUnavailableError(`progress stream failed: ${reasonOf(err)}`));
            }
          });
        }),
    );
    this.observe('progress', (performance.now() - started) / 1000, status >= 500);
    return status;
  }

  /** Records activity for a user's server (for jupyterhub-idle-culler). */
  async postActivity(user: string, server: string, token: string, when: Date): Promise<void> {
    const last_activity = when.toISOString();
    const response = await this.request('activity', 'POST', `users/${encodeURIComponent(user)}/activity`, token, {
      last_activity,
      servers: { [server]: { last_activity } },
    });
    if (response.statusCode >= 300) {
      throw new HubUnavailableError(`JupyterHub answered HTTP ${response.statusCode} to POST /users/NAME/activity`);
    }
  }
}
