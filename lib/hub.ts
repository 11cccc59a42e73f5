/**
 * A small JupyterHub REST API client (got): timeouts on every call, retries
 * only for idempotent GETs, TLS verification on (with an optional private CA).
 * Tokens go into the Authorization header and nowhere else: never into a URL,
 * an error message or a log line.
 */
import got, { type Got, RequestError } from 'got';

/** The part of `GET /hub/api/user` the proxy uses. */
export interface HubIdentity {
  name: string;
  kind?: string;
  admin?: boolean;
  scopes?: string[];
}

/** The Hub could not answer (down, slow, 5xx, garbage). Users see a generic line. */
export class HubUnavailableError extends Error {}

export interface HubClientOptions {
  timeoutMs: number;
  ca?: string | Buffer;
}

export class HubClient {
  private readonly http: Got;

  constructor(readonly baseUrl: string, options: HubClientOptions) {
    this.http = got.extend({
      prefixUrl: new URL('hub/api/', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`).toString(),
      timeout: { request: options.timeoutMs },
      retry: { limit: 2, methods: ['GET'], statusCodes: [502, 503, 504] },
      throwHttpErrors: false,
      https: options.ca ? { certificateAuthority: options.ca } : {},
      headers: { 'user-agent': 'jupyter-ssh-proxy' },
    });
  }

  /**
   * Who owns `token`: the identity, or null when the Hub rejects the token
   * (unknown, expired, revoked).
   */
  async identify(token: string): Promise<HubIdentity | null> {
    let response;
    try {
      response = await this.http.get('user', { headers: { authorization: `token ${token}` } });
    } catch (err) {
      // got's errors carry the request options (and so the token); keep only the reason.
      const reason = err instanceof RequestError ? err.code : 'request failed';
      throw new HubUnavailableError(`JupyterHub request failed: ${reason}`);
    }
    if (response.statusCode === 401 || response.statusCode === 403) return null;
    if (response.statusCode !== 200) {
      throw new HubUnavailableError(`JupyterHub answered HTTP ${response.statusCode} to GET /hub/api/user`);
    }
    let body: unknown;
    try {
      body = JSON.parse(response.body);
    } catch {
      throw new HubUnavailableError('JupyterHub answered GET /hub/api/user with something that is not JSON');
    }
    if (typeof body !== 'object' || body === null || typeof (body as HubIdentity).name !== 'string') {
      throw new HubUnavailableError('JupyterHub answered GET /hub/api/user without a user name');
    }
    return body as HubIdentity;
  }
}
