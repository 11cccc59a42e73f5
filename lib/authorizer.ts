/**
 * Who may log in as whom. The connection code only sees the `Authorizer`
 * interface; `HubAuthorizer` applies JupyterHub's own rule: the token must
 * hold `access:servers` on the server the login name selects.
 */
import { createHash } from 'node:crypto';
import { HubClient, HubUnavailableError, type HubIdentity } from './hub.js';
import { dependsOnGroups, grantsOn, serverLabel, type ServerRef } from './scopes.js';

/** Where an authorized login goes: a Hub user's server ('' is the default server). */
export interface LoginTarget {
  hubUser: string;
  server: string;
}

export type AuthDecision =
  | {
      ok: true;
      target: LoginTarget;
      /** The token's owner, for the log. */
      owner: string;
    }
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
  /**
   * The server a login with a key reaches. Whether the key may log in is
   * the target account's authorized_keys' to say; whether the Hub user
   * exists, the server start's. Undefined for a name key logins do not
   * take; rejects with HubUnavailableError.
   */
  keyLoginTarget(login: string): Promise<LoginTarget | undefined>;
}

export interface HubAuthorizerOptions {
  /** Separates user and server name in a login name (`alice+gpu`). */
  separator: string;
  /** How long a token's identity is trusted without asking the Hub again. */
  cacheTtlMs: number;
  /** How long a token the Hub rejected stays rejected without asking again. */
  failureCacheTtlMs: number;
  /** Used to look users up (groups, names containing the separator); else the user's own token. */
  serviceToken?: string;
  tokenPage: string;
}

/**
 * Separators a key login's name may hold. The server a name selects may
 * take a Hub lookup per separator, and a key login asks before anyone is
 * authenticated: a name full of separators must not become a flood of
 * requests to the Hub. (A token login looks up only once the Hub has
 * accepted the token.)
 */
const KEY_LOGIN_MAX_SEPARATORS = 2;

/** Entries the token cache holds at most; the oldest go first. */
const TOKEN_CACHE_ENTRIES = 10_000;

/**
 * Token verification results keyed by a SHA-256 of the token, never the token
 * itself, so a memory dump does not hand out credentials.
 */
class TokenCache {
  private readonly entries = new Map<string, { identity: HubIdentity | null; expires: number }>();

  static key(token: string): string {
    return createHash('sha256').update(token).digest('base64');
  }

  get(key: string): HubIdentity | null | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires <= Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.identity;
  }

  set(key: string, identity: HubIdentity | null, ttlMs: number): void {
    this.entries.delete(key);
    this.entries.set(key, { identity, expires: Date.now() + ttlMs });
    if (this.entries.size > TOKEN_CACHE_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
  }
}

export class HubAuthorizer implements Authorizer {
  private readonly cache = new TokenCache();

  constructor(private readonly hub: HubClient, private readonly options: HubAuthorizerOptions) {}

  async authorize(login: string, token: string): Promise<AuthDecision> {
    token = token.trim();
    const { tokenPage } = this.options;
    if (token === '') {
      return { ok: false, message: `Enter a JupyterHub API token (get one at ${tokenPage})`, detail: 'empty token', final: false };
    }
    // Printable ASCII only: anything else cannot be a JupyterHub token, and no
    // HTTP header could carry it (the request would fail as if the Hub were down).
    if (!/^[\x21-\x7e]{1,1024}$/.test(token)) {
      return {
        ok: false,
        message: `JupyterHub did not accept that token (unknown, expired or revoked); get a new one at ${tokenPage}`,
        detail: 'malformed token',
        final: false,
      };
    }
    try {
      const identity = await this.identify(token);
      if (identity === null) {
        return {
          ok: false,
          message: `JupyterHub did not accept that token (unknown, expired or revoked); get a new one at ${tokenPage}`,
          detail: 'token rejected by the Hub',
          final: false,
        };
      }
      const lookupToken = this.options.serviceToken ?? token;
      const target = await this.resolveTarget(login, identity.name, lookupToken);
      const scopes = identity.scopes ?? [];
      const groups = dependsOnGroups(scopes, 'access:servers')
        ? ((await this.hub.user(target.user, lookupToken))?.groups ?? [])
        : [];
      if (!grantsOn(scopes, 'access:servers', target, groups)) {
        const needed = `access:servers!server=${serverLabel(target)}`;
        // Most such logins are slips, not attempts on someone else's server:
        // ssh sent the local account name (no `alice@`), or the unix name
        // (`jupyter-alice`) stood in for the Hub name. Name the way in.
        const ownWay = target.user === identity.name ? '' : `; log in as '${identity.name}' to reach ${identity.name}'s own server`;
        return {
          ok: false,
          message:
            `The token of JupyterHub user '${identity.name}' lacks the scope ${needed} ` +
            `(or access:servers!user=${target.user}) needed to log in as '${login}'${ownWay}`,
          detail: `owner ${identity.name} lacks access:servers on ${serverLabel(target)}`,
          final: false,
        };
      }
      return { ok: true, target: { hubUser: target.user, server: target.server }, owner: identity.name };
    } catch (err) {
      if (!(err instanceof HubUnavailableError)) throw err;
      return { ok: false, message: 'JupyterHub is unavailable, try again later', detail: err.message, final: true };
    }
  }

  async keyLoginTarget(login: string): Promise<LoginTarget | undefined> {
    const { serviceToken, separator } = this.options;
    // The CLI turns key logins on only with a service token.
    if (serviceToken === undefined) throw new Error('key logins need a service token');
    if (login === '' || login.split(separator).length - 1 > KEY_LOGIN_MAX_SEPARATORS) return undefined;
    const target = await this.resolveTarget(login, undefined, serviceToken);
    return { hubUser: target.user, server: target.server };
  }

  private async identify(token: string): Promise<HubIdentity | null> {
    const key = TokenCache.key(token);
    const cached = this.cache.get(key);
    if (cached !== undefined) return cached;
    const identity = await this.hub.identify(token);
    this.cache.set(key, identity, identity ? this.options.cacheTtlMs : this.options.failureCacheTtlMs);
    return identity;
  }

  /**
   * The server a login name selects: `alice` is alice's default server,
   * `alice+gpu` her server `gpu`. Split by the token owner's own name first,
   * so owners whose names contain the separator still work; for someone
   * else's server (or with no owner, a key login), the longest existing
   * user name wins.
   */
  private async resolveTarget(login: string, owner: string | undefined, lookupToken: string): Promise<ServerRef> {
    const sep = this.options.separator;
    if (login === owner) return { user: owner, server: '' };
    if (owner !== undefined && login.startsWith(owner + sep) && login.length > owner.length + sep.length) {
      return { user: owner, server: login.slice(owner.length + sep.length) };
    }
    const cuts: number[] = [];
    for (let i = login.indexOf(sep); i > 0; i = login.indexOf(sep, i + 1)) cuts.push(i);
    if (cuts.length === 0) return { user: login, server: '' };
    const splitAt = (i: number): ServerRef => ({ user: login.slice(0, i), server: login.slice(i + sep.length) });
    if ((await this.hub.user(login, lookupToken)) !== null) return { user: login, server: '' };
    for (const i of [...cuts].reverse()) {
      if ((await this.hub.user(login.slice(0, i), lookupToken)) !== null) return splitAt(i);
    }
    // Nobody we can see: the Hub will say so when the server is looked up.
    return splitAt(cuts[0]!);
  }
}
