/**
 * One client connection: key exchange and user authentication with the
 * client, then a login on the upstream, then the relay.
 *
 * USERAUTH_SUCCESS goes to the client only once the upstream has accepted the
 * proxy's login, so every failure behind the proxy reaches the user as a
 * one-line message (a banner or a DISCONNECT), never a hang.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Authorizer, LoginTarget } from './authorizer.js';
import { certificateSessionOptions, signatureRefusal, type AuthorizedKey, type AuthorizedKeys, type AuthorizedKeysSource, type SessionOptions } from './authorizedkeys.js';
import { certificateRefusal, certificateSignatureAlgorithm, isCertificate, parseUserCertificate, type UserCertificate } from './certificates.js';
import { verifySignature } from './sshsignatures.js';
import { fromAllows } from './frompatterns.js';
import { fingerprint } from './hostkeys.js';
import { Leg } from './leg.js';
import { OWN_PACKET } from './leg.js';
import type { Logger } from './logger.js';
import { DISCONNECT_REASON, bannerPayload, disconnectPayload, extInfoPayload, parseKexInitCiphers } from './messages.js';
import { Relay } from './relay.js';
import {
  negotiatedCipher,
  negotiatedKex,
  publicKeyAlgorithm,
  replaceServerExtInfo,
  unmatchedAlgorithmList,
  type KexInitOffer,
  type ParsedKey,
  type PublicKeyAuthRequest,
} from './ssh2internals.js';
import { CLIENT_LEG_FLAGS, SERVER_SIG_ALGS, switchesFrom, type AesGcmSwitch } from './algorithms.js';
import { UpstreamError, type Upstream, type UpstreamConnection } from './upstream.js';
import { HubUnavailableError } from './hub.js';
import { ServerStarter, ServerUnavailableError } from './servers.js';
import type { ServerWatches } from './serverwatch.js';
import { channelTypeLabel, type Metrics } from './metrics.js';
import type { PenaltyKind } from './penalties.js';
import type { TrustedUserCAs } from './trustedcas.js';
import type { OfferedKey, RevokedKeys } from './revokedkeys.js';
import { blobType } from './sshwire.js';

/**
 * A client-chosen string fit to echo in a message and a log line: printable
 * ASCII only (no terminal escapes, NULs or line breaks), at most 64 characters.
 */
function printable(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 64 ? `${clean.slice(0, 64)}...` : clean;
}

/**
 * The server's EXT_INFO payload, the same for every connection: one buffer,
 * not one kept per session. `ping@openssh.com` lets OpenSSH 9.5 and later
 * hide the timing of keystrokes among chaff PINGs (ObscureKeystrokeTiming);
 * the relay answers them on the client leg, whatever sshd's version.
 */
const EXT_INFO = extInfoPayload({ 'server-sig-algs': SERVER_SIG_ALGS.join(','), 'ping@openssh.com': '0' });

/** Authentication requests a client may have waiting at once (it should wait for each answer). */
const MAX_QUEUED_AUTH_STEPS = 8;

/** The methods a client may use to present a JupyterHub token. */
const TOKEN_METHODS = ['keyboard-interactive', 'password'];

/**
 * Keys a client may offer or use per connection. ssh offers every key it
 * has, and unlisted ones are no one's fault; past this, publickey is no
 * longer listed and the client goes on to the token prompt (sshd would end
 * the connection at MaxAuthTries: "Too many authentication failures").
 */
const MAX_KEY_OFFERS = 10;

export interface ConnectionSettings {
  ident: string;
  hostKeys: Record<string, ParsedKey>;
  serverOffer: KexInitOffer;
  /** Unless --prefer-aes-gcm is no: how a client that offers AES-GCM is switched to it once it moves bulk data. */
  aesGcmSwitch?: AesGcmSwitch;
  clientOffer: KexInitOffer;
  authorizer: Authorizer;
  /** Where keys that log in without a token are listed; unset: no key logins (they need serviceToken). */
  keyLogins?: AuthorizedKeysSource;
  /** Authorities whose user certificates log in the Hub users they name, with no listed key (they need serviceToken). */
  trustedUserCAs?: TrustedUserCAs;
  /** Keys and certificates refused whoever lists or certifies them. */
  revokedKeys?: RevokedKeys;
  servers: ServerStarter;
  serviceToken?: string;
  /** Ties sessions to their server's life (activity reports, ending on a stop). */
  watches: ServerWatches;
  upstream: Upstream;
  /** Where users get a token, shown in prompts and messages. */
  tokenPage: string;
  maxAuthTries: number;
  loginGraceTimeMs: number;
  upstreamLoginTimeoutMs: number;
  maxQueuedBytes: number;
  metrics: Metrics;
}

type Phase = 'auth' | 'upstream' | 'relay' | 'closed';

export interface ConnectionHooks {
  /** Both legs are authenticated: the connection no longer counts as a startup. */
  authenticated(): void;
  /** The connection is over; `penalty` is what it costs its source, if anything. */
  closed(penalty: PenaltyKind | undefined): void;
}

/** A key login's listed key: the line, and for a certificate the certificate too; the session options for the upstream. */
interface ListedKey {
  target: LoginTarget;
  key: AuthorizedKey;
  certificate?: UserCertificate;
  sessionOptions?: SessionOptions;
  /** For a line of keys read before (AuthorizedKeys.recheck): asked once the server runs. */
  recheck?: () => Promise<string | undefined>;
}

/** A certificate for the log, as sshd names one: its key, ID, serial and authority (the ID is the authority's text: kept printable). */
function certificateName(certificate: UserCertificate): string {
  const id = certificate.keyId.replace(/[^\x20-\x7e]/g, '?').slice(0, 100);
  const { key, serial, authority } = certificate;
  return `${key.type}-cert ${fingerprint(key.blob)} ID "${id}" (serial ${serial}) CA ${authority.type} ${fingerprint(authority.blob)}`;
}

export class Connection {
  readonly id = randomBytes(3).toString('hex');
  readonly peer: string;
  private readonly client: Leg;
  private upstreamLeg?: Leg;
  private upstreamConn?: UpstreamConnection;
  private target?: LoginTarget;
  /** The token that reports activity and watches the server: the service's, else the user's. */
  private watchToken?: string;
  /** Ends this session's part in its server's watch. */
  private unwatch?: () => void;
  private phase: Phase = 'auth';
  private attempts = 0;
  /** Attempts the authorizer refused (not counting a Hub outage). */
  private refusedAttempts = 0;
  /** Authentication requests received and not yet answered. */
  private queuedAuthSteps = 0;
  private malformed = false;
  /** The client's first KEXINIT offered an AES-GCM cipher allowed (noteClientCiphers; unless --prefer-aes-gcm is no). */
  private clientOffersAesGcm = false;
  /** Serializes authentication requests: replies must keep their order. */
  private authChain: Promise<void> = Promise.resolve();
  private pendingKeyboardLogin?: string;
  /** Keys offered so far (MAX_KEY_OFFERS). */
  private keyOffers = 0;
  /**
   * The keys of the first login name a key was offered for, read once per
   * connection; other names get no key login (ssh never changes the name
   * within a connection, and every new name would cost lookups).
   */
  private keyList?: { login: string; listed: Promise<{ target: LoginTarget; keys: AuthorizedKeys } | undefined> };
  /** The options of the authorized_keys line the client logged in with, for the upstream to apply. */
  private sessionOptions?: SessionOptions;
  /** A key login by a line read before its server stopped: whether the line still lets in, once the server runs. */
  private keyRecheck?: () => Promise<string | undefined>;
  private readonly started = Date.now();
  /** Until both legs are authenticated; released then, with the closure it holds. */
  private graceTimer?: NodeJS.Timeout;
  private hooks?: ConnectionHooks;
  /** Channels opened in this session, by type. */
  private readonly channels = new Map<string, number>();
  private readonly traffic = () => ({ fromClient: this.client.bytesIn, toClient: this.client.bytesOut });
  /** Why the connection ended before a session, for the refusals metric. */
  private refusal?: string;

  constructor(private readonly socket: Socket, private readonly settings: ConnectionSettings, private readonly logger: Logger) {
    this.peer = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    this.client = new Leg({
      name: 'client',
      input: socket,
      output: socket,
      maxQueuedBytes: settings.maxQueuedBytes,
      protocol: {
        server: true,
        onFirstKexInit: settings.aesGcmSwitch && this.guard('client KEXINIT', (payload: Buffer) => this.noteClientCiphers(payload, settings.aesGcmSwitch!)),
        ident: settings.ident,
        offer: settings.serverOffer,
        hostKeys: settings.hostKeys,
        messageHandlers: {
          SERVICE_REQUEST: this.guard('service request', (_p: unknown, name: string) => this.onServiceRequest(name)),
          USERAUTH_REQUEST: this.guard('auth request', (_p: unknown, user: string, service: string, method: string, data: unknown) =>
            this.queueAuth(() => this.onAuthRequest(user, service, method, data)),
          ),
          USERAUTH_INFO_RESPONSE: this.guard('auth response', (_p: unknown, responses: string[]) =>
            this.queueAuth(() => this.onKeyboardResponse(responses)),
          ),
          DISCONNECT: this.guard('client disconnect', () => this.close('client disconnected')),
        },
      },
    });
    replaceServerExtInfo(this.client.proto, EXT_INFO);
    this.client.on(
      'error',
      this.guard('client error', (err: Error) => {
        const unmatched = unmatchedAlgorithmList(err);
        if (unmatched !== undefined) {
          // Not malformed: the client speaks SSH but accepts nothing offered
          // (an operator's narrowed list, or an old client); OpenSSH logs it too.
          this.refusal = 'no_matching_algorithm';
          this.log('info', `key exchange failed: the client accepts none of --${CLIENT_LEG_FLAGS[unmatched]} (${err.message})`);
        } else if (this.phase !== 'relay') {
          this.malformed = true;
        }
        this.close(`client protocol error: ${err.message}`);
      }),
    );
    this.client.on('end', this.guard('client end', () => this.close('client closed the connection')));
    socket.on('error', () => {}); // reported through the leg
    this.graceTimer = setTimeout(
      this.guard('grace timer', () => {
        this.refusal = 'login_grace_time';
        this.disconnect('Login grace time exceeded', DISCONNECT_REASON.BY_APPLICATION);
      }),
      settings.loginGraceTimeMs,
    );
    this.graceTimer.unref();
  }

  start(hooks: ConnectionHooks): void {
    this.hooks = hooks;
    this.settings.metrics.connections.inc();
    this.settings.metrics.trackTraffic(this.traffic);
    this.log('debug', `connection from ${this.peer}`);
    this.client.start();
  }

  /** Ends the connection with a DISCONNECT the user sees (server shutdown, errors). */
  disconnect(message: string, reason: number = DISCONNECT_REASON.BY_APPLICATION): void {
    if (this.phase === 'closed') return;
    this.client.sendUrgent(disconnectPayload(reason, message));
    this.close(message);
  }

  private log(level: string, message: string): void {
    this.logger.log(level, message, { conn: this.id, peer: this.peer });
  }

  private queueAuth(step: () => Promise<void> | void): void {
    // A client waits for each answer; one that pipelines requests could
    // otherwise queue without bound while a Hub call is in flight.
    if (++this.queuedAuthSteps > MAX_QUEUED_AUTH_STEPS) {
      this.malformed = true;
      this.disconnect('Too many authentication requests in flight', DISCONNECT_REASON.PROTOCOL_ERROR);
      return;
    }
    this.authChain = this.authChain
      .then(step)
      .catch((err: unknown) => this.internalError('authentication', err))
      .finally(() => this.queuedAuthSteps--);
  }

  /**
   * Wraps a callback that runs for this connection (an event listener, a
   * timer, an ssh2 message handler): an exception in it ends this connection
   * with "Internal error", logged with its stack, and never reaches the
   * process, which serves everyone else.
   */
  private guard<A extends unknown[]>(where: string, fn: (...args: A) => void): (...args: A) => void {
    return (...args: A) => {
      try {
        fn(...args);
      } catch (err) {
        this.internalError(where, err);
      }
    };
  }

  private internalError(where: string, err: unknown): void {
    this.log('error', `internal error in ${where}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    if (this.phase === 'closed') return;
    this.refusal ??= 'internal_error';
    try {
      this.client.sendUrgent(disconnectPayload(DISCONNECT_REASON.BY_APPLICATION, 'Internal error in jupyter-ssh-proxy; try again later'));
    } catch {
      // The client leg is what failed: closing the socket tells the client enough.
    }
    // close() releases each resource on its own, so it gets through whatever broke.
    this.close(`internal error in ${where}`);
  }

  private onServiceRequest(name: string): void {
    if (name === 'ssh-userauth') this.client.proto.serviceAccept(name);
    else this.disconnect(`Service ${printable(name)} is not available`, DISCONNECT_REASON.SERVICE_NOT_AVAILABLE);
  }

  /** The methods still open to the client, for USERAUTH_FAILURE. */
  private authMethods(): string[] {
    return this.keyLoginsOn() && this.keyOffers < MAX_KEY_OFFERS ? ['publickey', ...TOKEN_METHODS] : TOKEN_METHODS;
  }

  /** Whether any key logs in without a token: listed keys, or certificates of a trusted authority. */
  private keyLoginsOn(): boolean {
    return this.settings.keyLogins !== undefined || this.settings.trustedUserCAs !== undefined;
  }

  private onAuthRequest(user: string, service: string, method: string, data: unknown): Promise<void> | void {
    if (this.phase !== 'auth') return;
    if (service !== 'ssh-connection') return this.client.proto.authFailure(this.authMethods());
    switch (method) {
      case 'publickey':
        return this.tryKey(user, data as PublicKeyAuthRequest | undefined);
      case 'password':
        if (typeof data !== 'string') return this.client.proto.authFailure(this.authMethods()); // password change
        return this.tryToken(user, data, method);
      case 'keyboard-interactive':
        this.pendingKeyboardLogin = user;
        this.client.proto.authInfoReq('JupyterHub login', `Get a token at ${this.settings.tokenPage}`, [
          { prompt: 'JupyterHub API token: ', echo: false },
        ]);
        return;
      default:
        // 'none' and methods we do not offer: tell the client what we accept.
        return this.client.proto.authFailure(this.authMethods());
    }
  }

  private onKeyboardResponse(responses: string[]): Promise<void> | void {
    const user = this.pendingKeyboardLogin;
    this.pendingKeyboardLogin = undefined;
    if (this.phase !== 'auth' || user === undefined) return;
    return this.tryToken(user, responses[0] ?? '', 'keyboard-interactive');
  }

  private async tryToken(login: string, token: string, method: string): Promise<void> {
    // The authorizer accepts " token\n"; every later Hub call must use what it accepted.
    token = token.trim();
    this.attempts++;
    const decision = await this.settings.authorizer.authorize(login, token);
    const result = decision.ok ? 'success' : decision.final ? 'error' : 'failure';
    this.settings.metrics.authAttempts.inc({ method, result });
    if (this.phase !== 'auth') return;
    if (decision.ok) return this.accept(login, decision.target, `owner=${decision.owner} method=${method}`, this.settings.serviceToken ?? token);
    this.log('warn', `login refused: user=${login} method=${method} reason=${decision.detail}`);
    if (decision.final) return this.hubUnavailable(decision.message);
    this.refusedAttempts++;
    this.client.send(bannerPayload(`${decision.message}\r\n`), OWN_PACKET);
    this.refuseAttempt();
  }

  /**
   * A key offered ("would this one do?", no signature) or used (signed).
   * Unlisted keys are the normal case, since ssh offers every key it has,
   * and cost the source nothing; a signature that does not verify does.
   */
  private async tryKey(login: string, request: PublicKeyAuthRequest | undefined): Promise<void> {
    if (!this.keyLoginsOn() || this.keyOffers >= MAX_KEY_OFFERS) return this.client.proto.authFailure(this.authMethods());
    this.keyOffers++;
    if (request === undefined) {
      this.log('warn', `login refused: user=${login} method=publickey reason=unreadable signature`);
      this.attempts++;
      this.refusedAttempts++;
      return this.refuseAttempt();
    }
    const algorithm = publicKeyAlgorithm(request);
    // What server-sig-algs announced (no DSA, no RSA with SHA-1), or certificates of those, of the type the blob says.
    const certificateSignature = certificateSignatureAlgorithm(algorithm, request.key);
    const known = isCertificate(request.key) ? certificateSignature !== undefined : SERVER_SIG_ALGS.includes(algorithm);
    if (!known) return this.client.proto.authFailure(this.authMethods());
    // A certificate is parsed (and its authority's signature checked) once, for both checks below.
    const parsedCertificate = isCertificate(request.key) ? parseUserCertificate(request.key) : undefined;
    const revoked = this.revocation(request.key, parsedCertificate);
    if (revoked !== undefined) {
      this.log('warn', `login refused: user=${login} method=publickey reason=${revoked}`);
      return this.client.proto.authFailure(this.authMethods());
    }
    let listed: ListedKey | undefined;
    try {
      listed = await this.listedKey(login, request.key, parsedCertificate);
    } catch (err) {
      if (!(err instanceof HubUnavailableError)) throw err;
      this.log('warn', `login refused: user=${login} method=publickey reason=${err.message}`);
      return this.hubUnavailable('JupyterHub is unavailable, try again later');
    }
    if (this.phase !== 'auth') return;
    if (listed === undefined) return this.client.proto.authFailure(this.authMethods());
    if (request.signature === undefined || request.blob === undefined) return this.client.proto.authPKOK(algorithm, request.key);

    this.attempts++;
    const { target, key, certificate, sessionOptions, recheck } = listed;
    const keyName = certificate ? certificateName(certificate) : `${key.key.type} ${fingerprint(key.key)}`;
    const refusal = certificate
      ? verifySignature(certificate.key, request.blob, request.signature, certificateSignature)
        ? undefined
        : 'signature does not verify'
      : signatureRefusal(key, request.blob, request.signature, request.hashAlgo);
    this.settings.metrics.authAttempts.inc({ method: 'publickey', result: refusal === undefined ? 'success' : 'failure' });
    if (refusal === undefined) {
      this.sessionOptions = sessionOptions;
      this.keyRecheck = recheck;
      const options = sessionOptions ? ` options=${sessionOptions.names.join(',')}` : '';
      return this.accept(login, target, `owner=${target.hubUser} method=publickey key=${keyName}${options}`, this.settings.serviceToken!);
    }
    this.log('warn', `login refused: user=${login} method=publickey reason=${refusal} for ${keyName}`);
    this.refusedAttempts++;
    this.refuseAttempt();
  }

  /**
   * Why --revoked-keys refuses the key `blob` (or `certificate`, its
   * parsed form), naming it; undefined if it does not. A certificate that
   * does not parse is left to be refused as such.
   */
  private revocation(blob: Buffer, certificate: UserCertificate | string | undefined): string | undefined {
    const revoked = this.settings.revokedKeys;
    if (revoked === undefined || typeof certificate === 'string') return undefined;
    let offered: OfferedKey;
    let name: string;
    if (certificate !== undefined) {
      offered = { plain: certificate.key.blob, certificate: { authority: certificate.authority.blob, serial: certificate.serial, keyId: certificate.keyId } };
      name = certificateName(certificate);
    } else {
      offered = { plain: blob };
      name = `${blobType(blob)} ${fingerprint(blob)}`;
    }
    const refusal = revoked.refusal(offered, (message) => this.log('warn', message));
    return refusal && `${refusal} (--revoked-keys) for ${name}`;
  }

  /**
   * The listed key that is `blob`, or for a certificate the cert-authority
   * line that lets it in, with the login's target and the session options;
   * the list is read once per connection. `certificate` is the blob
   * parsed, if it is a certificate.
   */
  private async listedKey(login: string, blob: Buffer, certificate: UserCertificate | string | undefined): Promise<ListedKey | undefined> {
    const source = this.settings.keyLogins;
    this.keyList ??= {
      login,
      listed: (async () => {
        const target = await this.settings.authorizer.keyLoginTarget(login);
        if (target === undefined) return undefined;
        // With only --trusted-user-ca-keys, no account's file is read.
        const keys: AuthorizedKeys = source === undefined ? { keys: [], problems: [] } : await source.authorizedKeys(target);
        if (keys.problems.length > 0) this.log('info', `authorized keys for ${target.hubUser}: ${keys.problems.join('; ')}`);
        // Once per connection, for a user whose keys could not be read: told before they are asked for a token.
        if (keys.notice !== undefined && this.phase === 'auth') this.client.send(bannerPayload(`${keys.notice}\r\n`), OWN_PACKET);
        return { target, keys };
      })(),
    };
    if (this.keyList.login !== login) return undefined;
    const listed = await this.keyList.listed;
    if (listed === undefined) return undefined;
    // As sshd reads the file: the first line with this key whose from= and expiry-time= (if any) let the client in.
    const address = this.socket.remoteAddress ?? '';
    const now = Date.now();
    /** Why a line's from= or expiry-time= keeps the client out; undefined if neither does. */
    const lineRefusal = (e: AuthorizedKey) =>
      e.expiresAt !== undefined && now > e.expiresAt
        ? `expired at ${new Date(e.expiresAt).toISOString()} (expiry-time=)`
        : e.from !== undefined && !fromAllows(e.from, address)
          ? `is not allowed from ${address} (from=)`
          : undefined;
    const found = certificate !== undefined ? this.certifiedKey(certificate, listed, lineRefusal, address, now) : this.plainKey(blob, listed, lineRefusal);
    // Keys read before the server stopped: the line must still be there once it runs (not so for a trusted authority).
    const { recheck } = listed.keys;
    if (found !== undefined && recheck !== undefined && listed.keys.keys.includes(found.key)) found.recheck = () => recheck(found.key);
    return found;
  }

  /** The first line of `listed` with the plain key `blob` that lets the client in, as listedKey. */
  private plainKey(blob: Buffer, listed: { target: LoginTarget; keys: AuthorizedKeys }, lineRefusal: (e: AuthorizedKey) => string | undefined): ListedKey | undefined {
    // A cert-authority line's key logs in only through certificates, as with sshd.
    const lines = listed.keys.keys.filter((entry) => !entry.certAuthority && entry.blob.equals(blob));
    const key = lines.find((entry) => lineRefusal(entry) === undefined);
    if (key === undefined && lines.length > 0) {
      const why = lines.map((e) => `line ${e.line} ${lineRefusal(e)}`);
      this.log('info', `key ${lines[0]!.key.type} ${fingerprint(lines[0]!.key)} of ${listed.target.hubUser} refused: ${why.join('; ')}`);
    }
    return key && { target: listed.target, key, sessionOptions: key.sessionOptions };
  }

  /**
   * A trusted authority (--trusted-user-ca-keys) that lets `certificate`
   * in (or why it does not parse), else the first cert-authority line that
   * does, as listedKey; each refusal is logged. As sshd: the trusted
   * authorities first, then the account's lines.
   */
  private certifiedKey(
    certificate: UserCertificate | string,
    listed: { target: LoginTarget; keys: AuthorizedKeys },
    lineRefusal: (e: AuthorizedKey) => string | undefined,
    address: string,
    now: number,
  ): ListedKey | undefined {
    const whose = `of ${listed.target.hubUser}`;
    if (typeof certificate === 'string') {
      this.log('info', `certificate ${whose} refused: ${certificate}`);
      return undefined;
    }
    const trusted = this.settings.trustedUserCAs?.find(certificate.authority.blob, (message) => this.log('warn', message));
    if (trusted !== undefined) {
      const hubUser = listed.target.hubUser;
      // sshd with TrustedUserCAKeys: a certificate must name whom it lets in.
      const refusal =
        certificate.principals.length === 0
          ? 'the certificate names no principals'
          : certificateRefusal(certificate, hubUser, undefined, address, now);
      const sessionOptions = refusal ?? certificateSessionOptions(trusted, certificate);
      if (typeof sessionOptions !== 'string') return { target: listed.target, key: trusted, certificate, sessionOptions };
      this.log('info', `certificate ${certificateName(certificate)} ${whose} refused by --trusted-user-ca-keys: ${sessionOptions}`);
    }
    const lines = listed.keys.keys.filter((entry) => entry.certAuthority && entry.blob.equals(certificate.authority.blob));
    if (lines.length === 0) {
      if (trusted !== undefined) return undefined;
      const unlisted = [this.settings.trustedUserCAs && 'not in --trusted-user-ca-keys', this.settings.keyLogins && 'on no cert-authority line'].filter(Boolean);
      this.log('info', `certificate ${certificateName(certificate)} ${whose} refused: its authority is ${unlisted.join(', ')}`);
      return undefined;
    }
    const why: string[] = [];
    for (const line of lines) {
      const refusal =
        lineRefusal(line) ??
        (listed.keys.account === undefined ? 'its account is not known' : certificateRefusal(certificate, listed.keys.account, line.principals, address, now));
      const sessionOptions = refusal === undefined ? certificateSessionOptions(line, certificate) : refusal;
      if (typeof sessionOptions !== 'string') return { target: listed.target, key: line, certificate, sessionOptions };
      why.push(`line ${line.line}: ${sessionOptions}`);
    }
    this.log('info', `certificate ${certificateName(certificate)} ${whose} refused: ${why.join('; ')}`);
    return undefined;
  }

  /** Both ways in end here: start the server, then log in on the upstream. `token` makes the Hub calls. */
  private async accept(login: string, target: LoginTarget, how: string, token: string): Promise<void> {
    const kex = negotiatedKex(this.client.proto) ?? 'unknown';
    this.log('info', `login accepted: user=${login} server=${target.hubUser}/${target.server} ${how} kex=${kex}`);
    this.settings.metrics.loginKeyExchanges.inc({ method: kex });
    this.phase = 'upstream';
    this.target = target;
    this.watchToken = token;
    const problem = await this.settings.upstream.precheck(target);
    if (problem !== undefined) {
      this.refusal = 'upstream_unavailable';
      this.log('warn', `login cannot proceed: ${problem}`);
      return this.disconnect(problem);
    }
    if (!(await this.serverRunning(target, token))) return;
    if (this.keyRecheck !== undefined && !(await this.keyStillListed())) return;
    await this.connectUpstream(target);
  }

  /** For a key login by a line read before the server stopped: whether the running server's file still has it; ends the connection if not. */
  private async keyStillListed(): Promise<boolean> {
    let refusal: string | undefined;
    try {
      refusal = await this.keyRecheck!();
    } catch (err) {
      if (!(err instanceof HubUnavailableError)) throw err;
      refusal = 'JupyterHub is unavailable, try again later';
    }
    if (this.phase !== 'upstream') return false;
    if (refusal === undefined) return true;
    this.refusal = 'key_withdrawn';
    this.log('warn', `login cannot proceed: the key line read before the server stopped does not let in now: ${refusal}`);
    this.disconnect(refusal);
    return false;
  }

  private hubUnavailable(message: string): void {
    this.refusal = 'hub_unavailable';
    this.disconnect(message, DISCONNECT_REASON.BY_APPLICATION);
  }

  /** After a refused attempt: another try, unless that was the last. */
  private refuseAttempt(): void {
    if (this.attempts >= this.settings.maxAuthTries) {
      this.refusal = 'max_auth_tries';
      return this.disconnect('Too many authentication failures', DISCONNECT_REASON.NO_MORE_AUTH_METHODS_AVAILABLE);
    }
    this.client.proto.authFailure(this.authMethods());
  }

  /** Starts the Hub server if needed, showing progress; false if the connection was ended. */
  private async serverRunning(target: LoginTarget, token: string): Promise<boolean> {
    const started = Date.now();
    let announced = false;
    const spawnDone = (result: string) => {
      const seconds = (Date.now() - started) / 1000;
      if (announced) this.settings.metrics.spawns.observe({ result }, seconds);
      if (announced) this.log('info', `spawn of ${target.hubUser}/${target.server}: ${result} after ${seconds.toFixed(1)}s`);
    };
    try {
      await this.settings.servers.ensureRunning(target, token, (line) => {
        announced = true;
        if (this.phase === 'upstream') this.client.send(bannerPayload(`${line}\r\n`), OWN_PACKET);
      });
    } catch (err) {
      spawnDone('failed');
      this.refusal = 'server_unavailable';
      if (err instanceof ServerUnavailableError) {
        this.log('warn', `server ${target.hubUser}/${target.server} unavailable: ${err.message}`);
        this.disconnect(err.message);
        return false;
      }
      if (err instanceof HubUnavailableError) {
        this.log('warn', `server ${target.hubUser}/${target.server}: ${err.message}`);
        this.disconnect('JupyterHub is unavailable, try again later');
        return false;
      }
      throw err;
    }
    spawnDone('ready');
    return this.phase === 'upstream';
  }

  private async connectUpstream(target: LoginTarget): Promise<void> {
    let conn: UpstreamConnection;
    try {
      conn = await this.settings.upstream.connect(target, (level, message) => this.log(level, message), this.sessionOptions);
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      this.refusal = 'upstream_unavailable';
      return this.disconnect(err.message);
    }
    if (this.phase !== 'upstream') return conn.close();
    this.upstreamConn = conn;

    const timer = setTimeout(
      this.guard('upstream login timer', () => {
        if (this.phase !== 'upstream') return;
        this.log('warn', 'upstream login timed out');
        this.disconnect('The SSH server for your environment did not answer in time; try again later');
      }),
      this.settings.upstreamLoginTimeoutMs,
    );
    timer.unref();
    const fail = (why: string) => {
      clearTimeout(timer);
      if (this.phase !== 'upstream') return;
      this.refusal = 'upstream_unavailable';
      this.log('warn', `upstream login failed: ${why}`);
      conn
        .explainFailure()
        .then((message) => this.disconnect(message))
        .catch((err: unknown) => this.internalError('explaining an upstream failure', err));
    };

    const leg = new Leg({
      name: 'upstream',
      input: conn.input,
      output: conn.output,
      maxQueuedBytes: this.settings.maxQueuedBytes,
      protocol: {
        server: false,
        ident: this.settings.ident,
        offer: this.settings.clientOffer,
        hostVerifier: (key: Buffer) => key.equals(conn.hostKey),
        messageHandlers: {
          SERVICE_ACCEPT: this.guard('upstream service accept', () =>
            leg.proto.authPK(conn.username, conn.clientKey, conn.clientKey.type, (data, cb) => {
              const signature = conn.clientKey.sign(data);
              if (signature instanceof Error) throw signature;
              cb(signature);
            }),
          ),
          USERAUTH_BANNER: this.guard('upstream banner', (_p: unknown, message: string) => this.client.send(bannerPayload(message), OWN_PACKET)),
          USERAUTH_FAILURE: this.guard('upstream auth failure', () => fail('publickey refused')),
          USERAUTH_SUCCESS: this.guard('upstream auth success', () => {
            clearTimeout(timer);
            this.startRelay();
          }),
          DISCONNECT: this.guard('upstream disconnect', (_p: unknown, reason: number, description: string) =>
            fail(`disconnect ${reason}: ${description}`),
          ),
        },
      },
    });
    this.upstreamLeg = leg;
    leg.on('handshake', this.guard('upstream handshake', () => leg.proto.service('ssh-userauth')));
    leg.on(
      'error',
      this.guard('upstream error', (err: Error) => {
        if (this.phase === 'upstream') fail(`protocol error: ${err.message}`);
        else this.endBecauseUpstream(`protocol error: ${err.message}`);
      }),
    );
    leg.on(
      'end',
      this.guard('upstream end', () => {
        if (this.phase === 'upstream') fail('connection closed');
        else this.endBecauseUpstream('connection closed');
      }),
    );
    leg.start();
  }

  /** Runs synchronously inside the upstream's USERAUTH_SUCCESS, before any later payload. */
  private startRelay(): void {
    if (this.phase !== 'upstream') return;
    this.phase = 'relay';
    this.hooks?.authenticated();
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    this.client.proto.authSuccess();
    const relay = new Relay(this.client, this.upstreamLeg!, {
      end: this.guard('relay end', (initiator: Leg, reason: string) => this.close(`${initiator.name} ${reason}`)),
      fail: this.guard('relay failure', (leg: Leg, err: Error) => {
        if (leg === this.client) this.disconnect(`Protocol error: ${err.message}`, DISCONNECT_REASON.PROTOCOL_ERROR);
        else this.endBecauseUpstream(`protocol error: ${err.message}`);
      }),
      channelOpened: this.guard('channel count', (type: string) => {
        const label = channelTypeLabel(type);
        this.channels.set(label, (this.channels.get(label) ?? 0) + 1);
        this.settings.metrics.channels.inc({ type: label });
      }),
    });
    relay.start();
    this.switchToAesGcmForBulk();
    this.unwatch = this.settings.watches.watch(this.target!, this.watchToken!, {
      traffic: () => this.client.bytesIn + this.client.bytesOut,
      onStopped: this.guard('server watch', (message: string) => {
        this.log('info', message);
        this.disconnect(message);
      }),
    });
    this.log('info', `session started: unix user ${this.upstreamConn!.username}`);
  }

  /** Whether the client's first KEXINIT offers, both ways, an AES-GCM cipher the operator allows. */
  private noteClientCiphers(payload: Buffer, aesGcm: AesGcmSwitch): void {
    const lists = parseKexInitCiphers(payload);
    this.clientOffersAesGcm = lists !== undefined && [lists.cs, lists.sc].every((list) => list.some((c) => aesGcm.ciphers.includes(c)));
  }

  /**
   * A client that chose AES-CTR (or with --prefer-aes-gcm all, any other
   * cipher) but offered AES-GCM is switched to it by a key exchange of the
   * proxy's own, offering only AES-GCM, once either direction reads bulk
   * data: interactive sessions never pay for the extra exchange. A client on
   * AES-CTR gains most: its HMAC costs the daemon two to four times the CPU
   * of AES-GCM.
   */
  private switchToAesGcmForBulk(): void {
    const aesGcm = this.settings.aesGcmSwitch;
    if (aesGcm === undefined || !this.clientOffersAesGcm || !switchesFrom(aesGcm, negotiatedCipher(this.client.proto) ?? '')) return;
    const legs = [this.client, this.upstreamLeg!];
    const onBulk = () => {
      for (const leg of legs) leg.off('bulk', onBulk);
      // After this turn: the leg that emits is starting its socket relay.
      setImmediate(
        this.guard('AES-GCM switch', () => {
          if (this.phase !== 'relay') return;
          const from = negotiatedCipher(this.client.proto);
          // In a key exchange the client started: at the next bulk data.
          if (!this.client.rekeyWith(aesGcm.offer)) return this.switchToAesGcmForBulk();
          this.log('debug', `bulk data: switching the client leg from ${from} to AES-GCM`);
          this.settings.metrics.aesGcmSwitches.inc();
        }),
      );
    };
    for (const leg of legs) leg.on('bulk', onBulk);
  }

  private endBecauseUpstream(why: string): void {
    if (this.phase === 'closed') return;
    this.log('warn', `upstream ended: ${why}`);
    this.disconnect('The SSH server for your environment closed the connection');
  }

  /** What a connection that ended before a session costs its source. */
  private penalty(): PenaltyKind | undefined {
    if (this.refusal === 'login_grace_time') return 'grace-exceeded';
    if (this.malformed) return 'malformed';
    if (this.refusedAttempts > 0) return 'authfail';
    // Ended by a problem of ours (Hub, server, upstream): not the client's fault.
    if (this.refusal !== undefined || this.phase === 'upstream') return undefined;
    return this.attempts === 0 ? 'noauth' : undefined;
  }

  private close(reason: string): void {
    if (this.phase === 'closed') return;
    const wasRelaying = this.phase === 'relay';
    const penalty = wasRelaying ? undefined : this.penalty();
    this.phase = 'closed';
    // Each step on its own: a failing one (a bug) must not keep the others
    // from releasing the sockets, the sshd and the server's counts.
    const steps: [string, () => void][] = [
      ['timers', () => clearTimeout(this.graceTimer)],
      ['server watch', () => this.unwatch?.()],
      ['client leg', () => this.client.shutdown()],
      ['upstream leg', () => this.upstreamLeg?.shutdown()],
      ['upstream', () => this.upstreamConn?.close()],
      ['socket', () => this.endSocket()],
      ['metrics', () => this.countEnd(wasRelaying)],
      ['log', () => this.logEnd(wasRelaying, reason)],
    ];
    for (const [what, step] of steps) {
      try {
        step();
      } catch (err) {
        this.log('error', `internal error closing the ${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        if (what !== 'socket') this.socket.destroy();
      }
    }
    this.reportClosed(penalty);
  }

  /** Lets what is buffered (a DISCONNECT) go out, then makes sure the socket dies. */
  private endSocket(): void {
    this.socket.end();
    const killer = setTimeout(() => this.socket.destroy(), 2000);
    killer.unref();
    this.socket.once('close', () => clearTimeout(killer));
  }

  private countEnd(wasRelaying: boolean): void {
    const { metrics } = this.settings;
    metrics.connections.dec();
    metrics.untrackTraffic(this.traffic);
    if (!wasRelaying) metrics.refusals.inc({ reason: this.refusal ?? 'client_left' });
  }

  private logEnd(wasRelaying: boolean, reason: string): void {
    const seconds = ((Date.now() - this.started) / 1000).toFixed(1);
    if (wasRelaying) {
      const channels = [...this.channels].map(([type, n]) => `${type}:${n}`).join(',') || 'none';
      this.log(
        'info',
        `session ended after ${seconds}s (${reason}): bytes from client=${this.client.bytesIn} to client=${this.client.bytesOut}` +
          ` channels=${channels} key exchanges client=${this.client.keyExchanges} upstream=${this.upstreamLeg!.keyExchanges}`,
      );
    } else {
      this.log('debug', `connection closed after ${seconds}s (${reason})`);
    }
  }

  /** Tells the server, exactly once, that this connection is over. */
  private reportClosed(penalty: PenaltyKind | undefined): void {
    const hooks = this.hooks;
    this.hooks = undefined;
    hooks?.closed(penalty);
  }
}
