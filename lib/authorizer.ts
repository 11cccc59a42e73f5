/**
 * Who may log in as whom. The connection code only sees the `Authorizer`
 * interface; this module's implementation asks JupyterHub who owns a token.
 */
import { HubClient, HubUnavailableError } from './hub.js';

/** Where an authorized login goes: a Hub user's server ('' is the default server). */
export interface LoginTarget {
  hubUser: string;
  server: string;
}

export type AuthDecision =
  | { ok: true; target: LoginTarget }
  | {
      ok: false;
      /** One line for the user. */
      message: string;
      /** For the log; never contains the credential. */
      detail: string;
      /** True when another attempt cannot help (the Hub is down): end the connection. */
      final: boolean;
    };

export interface Authorizer {
  /** Decides whether `token` lets its bearer log in as `login`. */
  authorize(login: string, token: string): Promise<AuthDecision>;
}

/** Accepts a JupyterHub API token whose owner is the login name. */
export class HubTokenAuthorizer implements Authorizer {
  constructor(private readonly hub: HubClient, private readonly tokenPage: string) {}

  async authorize(login: string, token: string): Promise<AuthDecision> {
    token = token.trim();
    if (token === '') {
      return { ok: false, message: `Enter a JupyterHub API token (get one at ${this.tokenPage})`, detail: 'empty token', final: false };
    }
    let identity;
    try {
      identity = await this.hub.identify(token);
    } catch (err) {
      if (!(err instanceof HubUnavailableError)) throw err;
      return { ok: false, message: 'JupyterHub is unavailable, try again later', detail: err.message, final: true };
    }
    if (identity === null) {
      return {
        ok: false,
        message: `JupyterHub did not accept that token (unknown, expired or revoked); get a new one at ${this.tokenPage}`,
        detail: 'token rejected by the Hub',
        final: false,
      };
    }
    if (identity.name !== login) {
      return {
        ok: false,
        message: `That token belongs to JupyterHub user '${identity.name}', not '${login}'`,
        detail: `token owner is ${identity.name}`,
        final: false,
      };
    }
    return { ok: true, target: { hubUser: identity.name, server: '' } };
  }
}
