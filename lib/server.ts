/**
 * The daemon: loads host keys, prepares the upstream, accepts connections.
 * Each connection is isolated: an error in one closes only that one.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { CLIENT_LEG_FLAGS, DEFAULT_CLIENT_LEG, aesGcmSwitch, hostKeyAlgorithms, clientOffer, serverOffer } from './algorithms.js';
import { activeAllocator } from './allocator.js';
import { HubAuthorizer } from './authorizer.js';
import type { AuthorizedKeysSource } from './authorizedkeys.js';
import { FAILED_TOKEN_CACHE_MS, IDENT, type ProxyConfig } from './config.js';
import { Connection, type ConnectionSettings } from './connection.js';
import { HostKeyError, fingerprint, loadHostKeys } from './hostkeys.js';
import { HYBRID_KEY_EXCHANGES } from './hybridkex.js';
import { HubClient } from './hub.js';
import { LocalSshdUpstream } from './localsshd.js';
import { ServerStarter } from './servers.js';
import { ServerWatches } from './serverwatch.js';
import { formatListenAddress, type Logger } from './logger.js';
import { Metrics, serveMetrics } from './metrics.js';
import { packetRelay } from './packetrelay.js';
import { SourcePenalties } from './penalties.js';
import { ServerAuthorizedKeys } from './serverkeys.js';
import { collectWhenQuiet } from './quietgc.js';
import { sandboxReachingSessions } from './sandbox.js';
import { adoptWithSharedReads } from './sharedreads.js';
import { RevokedKeys } from './revokedkeys.js';
import { TrustedUserCAs } from './trustedcas.js';
import { WebSocketUpstream } from './websocketupstream.js';
import { cryptoReady, hybridKeyExchangesInstalled, installedSsh2Version, nativeCryptoAvailable, relayLoopAvailable, type ParsedKey } from './ssh2internals.js';

export class ProxyServer {
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  /** Connections accepted and ended since start, for the quiet collection. */
  private acceptedConnections = 0;
  private endedConnections = 0;
  private readonly metrics = new Metrics();
  private penalties?: SourcePenalties;
  /** Connections that have not finished authentication (MaxStartups counts these). */
  private unauthenticated = 0;
  private readonly refusalLog: RefusalLog;
  /** Called as connections close while draining. */
  private drained?: () => void;
  private metricsServer?: http.Server;
  private stopQuietGc?: () => void;
  /** What new connections get; a reload replaces it, open connections keep theirs. */
  private settings?: ConnectionSettings;
  /** Every upstream made (one per load); sessions may still use old ones until exit. */
  private readonly upstreams: LocalSshdUpstream[] = [];
  /**
   * The Hub client and the server watches, kept across a reload that leaves
   * their settings alone: sessions from before and after it then share one
   * watch per server (one poll per interval, not two) and one limit on
   * concurrent Hub requests.
   */
  private hubLink?: { settings: string; hub: HubClient; watches: ServerWatches };
  /** Keys read in users' servers, with the settings they were read with (serverKeysFor). */
  private serverKeys?: { settings: string; keys: ServerAuthorizedKeys };

  constructor(private config: ProxyConfig, private readonly log: Logger) {
    // Paused: nothing is read before adoptWithSharedReads (accept).
    this.server = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
    this.refusalLog = new RefusalLog(log);
  }

  /** Prepares everything and listens; resolves with the bound address. */
  async listen(): Promise<net.AddressInfo> {
    try {
      await cryptoReady;
      this.settings = await this.load(this.config);
      this.log.info(
        `ssh2 ${installedSsh2Version()}, native crypto binding ${nativeCryptoAvailable ? 'available' : 'NOT built (slower fallback)'}, ${activeAllocator()}, packet relay loop ${relayLoopAvailable ? 'on' : 'OFF (needs ssh2\'s native binding, and ssh2 loaded by lib/ssh2internals.ts first)'}, AES-GCM by ${packetRelay.aesGcmImplementation()}, post-quantum key exchange ${hybridKeyExchangesInstalled ? `offered (${[...HYBRID_KEY_EXCHANGES.keys()].join(', ')})` : 'NOT offered (ssh2 is not patched: npm ci applies patches/ with patch-package)'}`,
      );
      const sandbox = sandboxReachingSessions();
      if (sandbox.length > 0) {
        this.log.warn(
          `users' sessions inherit this daemon's sandbox: ${sandbox.join('; ')}. ` +
            'Run it as a service of its own without sandboxing (deploy/jupyter-ssh-proxy.service, docs/deploy.md)',
        );
      }
      if (this.config.metricsPort !== undefined) {
        this.metricsServer = await serveMetrics(this.metrics, this.config.metricsIp, this.config.metricsPort, this.log);
      }
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen({ host: this.config.ip || undefined, port: this.config.port }, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.metricsServer?.close();
      this.disposeUpstreams();
      throw err;
    }
    this.stopQuietGc = collectWhenQuiet(
      this.log,
      () => this.acceptedConnections,
      () => this.endedConnections,
    );
    const address = this.server.address() as net.AddressInfo;
    this.log.info(`listening on ${formatListenAddress(address)}, JupyterHub API at ${this.config.hubApiUrl}`);
    if (!/^https?:\/\/(?!127\.|localhost[:/]|\[::1\])/.test(this.config.tokenPage)) {
      this.log.info(`users are shown ${this.config.tokenPage} to get a token, an address only this machine reaches: set --public-url to the Hub's address as they know it`);
    }
    // Not awaited: the Hub may start after the proxy. A wrong address shows
    // here at once, not at the first user's login.
    this.hubLink!.hub.version().then(
      (version) => this.log.info(`JupyterHub ${version} answers at ${this.config.hubApiUrl}`),
      (err: Error) => this.log.warn(`JupyterHub does not answer at ${this.config.hubApiUrl}: ${err.message}; logins fail until it does`),
    );
    return address;
  }

  /**
   * Applies a new configuration (SIGHUP): host keys are read again, and new
   * connections get the new settings; open sessions go on untouched. On any
   * error the old configuration stays.
   */
  async reload(config: ProxyConfig): Promise<void> {
    for (const key of ['ip', 'port', 'metricsIp', 'metricsPort'] as const) {
      if (config[key] !== this.config[key]) this.log.warn(`--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} changes need a restart`);
    }
    this.settings = await this.load(config);
    this.log.level = config.logLevel;
    this.config = config;
    this.log.info(`configuration and host keys reloaded; ${this.connections.size} open connections keep theirs`);
  }

  /** Builds what connections need from `config`. */
  private async load(config: ProxyConfig): Promise<ConnectionSettings> {
    const { keys, generated } = loadHostKeys(config.keyDir);
    for (const file of generated) this.log.info(`generated host key ${file}`);
    // For operators to publish: what users are asked to confirm at their first connection.
    this.log.info(`host key fingerprints: ${keys.map(({ key }) => `${key.type} ${fingerprint(key)}`).join(', ')}`);
    const hostKeys: Record<string, ParsedKey> = {};
    const signable = keys.flatMap(({ key }) => hostKeyAlgorithms(key.type).map((algo) => ({ algo, key })));
    for (const { algo, key } of signable) if (config.algorithms.hostKey.includes(algo)) hostKeys[algo] ??= key;
    if (Object.keys(hostKeys).length === 0) {
      const available = [...new Set(signable.map(({ algo }) => algo))].join(',');
      throw new HostKeyError(`--host-key-algorithms ${config.algorithms.hostKey.join(',')} matches none of the host keys in ${config.keyDir}, which sign with ${available}`);
    }

    for (const [key, list] of Object.entries(config.algorithms) as [keyof typeof DEFAULT_CLIENT_LEG, string[]][]) {
      if (list.join() !== DEFAULT_CLIENT_LEG[key].join()) this.log.info(`--${CLIENT_LEG_FLAGS[key]}: offering clients ${list.join(',')}`);
    }

    // The Hub's CA (--hub-ca), read once for the Hub client, the servers' WebSockets and their key files.
    const hubCa = config.hubCa ? fs.readFileSync(config.hubCa) : undefined;
    const hubLink = this.hubLinkFor(config, hubCa);
    const { hub, watches } = hubLink;
    const upstream = config.upstream === 'websocket' ? this.websocketUpstream(config, hubCa) : await this.localSshdUpstream(config);

    // Penalty state survives a reload unless the rules changed.
    if (JSON.stringify(config.penalties) !== JSON.stringify(this.config.penalties) || this.penalties === undefined) {
      this.penalties = config.penalties ? new SourcePenalties(config.penalties) : undefined;
    }

    this.hubLink = hubLink;
    const { serviceToken, tokenPage } = config;
    if (!serviceToken) this.log.info("no JUPYTERHUB_API_TOKEN: users' own tokens are used to start servers and report activity");
    let keyLogins: AuthorizedKeysSource | undefined;
    if (config.authorizedKeysFile !== undefined && upstream instanceof WebSocketUpstream) {
      keyLogins = this.serverKeysFor(config, hub, hubCa);
      this.log.info(`key logins on: keys listed in ${config.authorizedKeysFile} in each user's server, read through its extension`);
    } else if (config.authorizedKeysFile !== undefined && upstream instanceof LocalSshdUpstream) {
      keyLogins = upstream;
      this.log.info(`key logins on: keys listed in each account's ${config.authorizedKeysFile}`);
    }
    let trustedUserCAs: TrustedUserCAs | undefined;
    if (config.trustedUserCaKeys !== undefined) {
      const { cas, problems } = TrustedUserCAs.open(config.trustedUserCaKeys);
      for (const problem of problems) this.log.warn(`--trusted-user-ca-keys: ${problem}`);
      this.log.info(`certificate logins on: user certificates of the ${cas.size} authorities in ${cas.file}, for the Hub users their principals name`);
      trustedUserCAs = cas;
    }
    let revokedKeys: RevokedKeys | undefined;
    if (config.revokedKeys !== undefined) {
      const { revoked, form, problems } = RevokedKeys.open(config.revokedKeys);
      for (const problem of problems) this.log.warn(`--revoked-keys: ${problem}`);
      this.log.info(`revoked keys: ${revoked.file}, a ${form}, refuses what it lists`);
      revokedKeys = revoked;
    }
    return {
      ident: IDENT,
      hostKeys,
      serverOffer: serverOffer(Object.keys(hostKeys), config.algorithms),
      aesGcmSwitch: aesGcmSwitch(Object.keys(hostKeys), config.algorithms, config.preferAesGcm),
      clientOffer: clientOffer(),
      keyLogins,
      trustedUserCAs,
      revokedKeys,
      authorizer: new HubAuthorizer(hub, {
        separator: config.separator,
        cacheTtlMs: config.authCacheTtlMs,
        failureCacheTtlMs: FAILED_TOKEN_CACHE_MS,
        serviceToken,
        tokenPage,
      }),
      servers: new ServerStarter(hub, {
        startServers: config.startServers,
        createNamedServers: config.createNamedServers,
        spawnTimeoutMs: config.spawnTimeoutMs,
        serviceToken,
        homePage: config.homePage,
        tokenPage,
      }),
      serviceToken,
      watches,
      upstream,
      tokenPage,
      maxAuthTries: config.maxAuthTries,
      loginGraceTimeMs: config.loginGraceTimeMs,
      upstreamLoginTimeoutMs: 30_000,
      maxQueuedBytes: config.maxQueuedBytes,
      metrics: this.metrics,
    };
  }

  /** Sessions on this machine: an `sshd -i` per login as the user's unix account. */
  private async localSshdUpstream(config: ProxyConfig): Promise<LocalSshdUpstream> {
    const upstream = new LocalSshdUpstream({
      sshdPath: config.sshdPath,
      unixUserTemplate: config.unixUser,
      runtimeDir: config.runtimeDir,
      sshdOptions: config.sshdOptions,
      authorizedKeysFile: config.authorizedKeysFile,
    });
    this.upstreams.push(upstream);
    const { removed, unowned } = upstream.neighbours;
    if (removed.length > 0) this.log.info(`removed ${removed.length} runtime folders of daemons that are gone: ${removed.join(' ')}`);
    if (unowned.length > 0) this.log.info(`left ${unowned.length} runtime folders without an owner record (older builds wrote none; remove them by hand once those daemons are gone): ${unowned.join(' ')}`);
    const problem = await upstream.check();
    if (problem) this.log.warn(`${problem}; logins will fail until this is fixed`);
    return upstream;
  }

  /** Sessions in the user's server, wherever it runs: through its server extension (lib/websocketupstream.ts). */
  private websocketUpstream(config: ProxyConfig, ca: Buffer | undefined): WebSocketUpstream {
    // The CLI takes --upstream websocket only with a URL and a service token.
    const upstream = new WebSocketUpstream({
      serversUrl: config.serversUrl!,
      serviceToken: config.serviceToken!,
      ca,
      timeoutMs: config.hubTimeoutMs,
      frames: config.websocketFrames,
    });
    const carried = config.websocketFrames ? 'in WebSocket messages' : 'as the raw stream after the upgrade where the extension can';
    this.log.info(`sessions run in the users' servers: sshd -i through ${upstream.endpoint({ hubUser: 'NAME', server: '' })}, ${carried}`);
    return upstream;
  }

  /**
   * The keys read in users' servers (--upstream websocket): the current
   * reader if `config` reads them the same way through `hub`, so that the
   * keys it keeps for stopped servers survive a reload; a new one otherwise.
   */
  private serverKeysFor(config: ProxyConfig, hub: HubClient, ca: Buffer | undefined): ServerAuthorizedKeys {
    // The CLI takes --upstream websocket only with a URL and a service token.
    const settings = JSON.stringify([config.serversUrl, config.serviceToken, ca?.toString('base64'), config.hubTimeoutMs, config.authorizedKeysFile]);
    if (this.serverKeys?.settings !== settings || this.serverKeys.keys.options.hub !== hub) {
      const keys = new ServerAuthorizedKeys({
        serversUrl: config.serversUrl!,
        serviceToken: config.serviceToken!,
        ca,
        timeoutMs: config.hubTimeoutMs,
        keysFile: config.authorizedKeysFile!,
        hub,
      });
      this.serverKeys = { settings, keys };
    }
    return this.serverKeys.keys;
  }

  /** The current Hub client and watches if `config` has the same Hub settings, new ones otherwise. */
  private hubLinkFor(config: ProxyConfig, ca: Buffer | undefined): NonNullable<ProxyServer['hubLink']> {
    const settings = JSON.stringify([
      config.hubApiUrl,
      config.hubTimeoutMs,
      config.hubConcurrency,
      ca?.toString('base64'),
      config.activityIntervalMs,
      config.serverPollIntervalMs,
    ]);
    if (this.hubLink?.settings === settings) return this.hubLink;
    const hub = new HubClient({
      apiUrl: config.hubApiUrl,
      timeoutMs: config.hubTimeoutMs,
      ca,
      maxConcurrent: config.hubConcurrency,
      observe: this.metrics.observeHub,
    });
    const watches = new ServerWatches(hub, { activityIntervalMs: config.activityIntervalMs, pollIntervalMs: config.serverPollIntervalMs }, (level, message) =>
      this.log.log(level, message),
    );
    return { settings, hub, watches };
  }

  private disposeUpstreams(): void {
    for (const upstream of this.upstreams.splice(0)) upstream.dispose();
  }

  /** Why a new connection from `address` must be refused at once, if it must. */
  private admissionRefusal(address: string): string | undefined {
    if (this.connections.size >= this.config.maxSessions) return 'max_sessions';
    if (this.penalties && this.penalties.blockedFor(address) > 0) return 'penalty';
    // OpenSSH's MaxStartups: random early drop between start and full.
    const { start, rate, full } = this.config.maxStartups;
    if (this.unauthenticated >= full) return 'max_startups';
    if (this.unauthenticated >= start) {
      const p = rate / 100 + (1 - rate / 100) * ((this.unauthenticated - start) / (full - start));
      if (Math.random() < p) return 'max_startups';
    }
    return undefined;
  }

  private accept(socket: net.Socket): void {
    const address = socket.remoteAddress ?? '';
    const refusal = this.admissionRefusal(address);
    if (refusal !== undefined) {
      this.metrics.refusals.inc({ reason: refusal });
      this.refusalLog.note(refusal, address);
      socket.destroy();
      return;
    }
    let adopted: net.Socket | undefined;
    try {
      adopted = adoptWithSharedReads(socket);
      const connection = new Connection(adopted, this.settings!, this.log);
      this.connections.add(connection);
      this.acceptedConnections++;
      this.unauthenticated++;
      let startup = true;
      const leaveStartups = () => {
        if (startup) this.unauthenticated--;
        startup = false;
      };
      connection.start({
        authenticated: leaveStartups,
        closed: (penalty) => {
          leaveStartups();
          this.connections.delete(connection);
          this.endedConnections++;
          if (penalty && this.penalties?.penalize(address, penalty)) {
            this.log.warn(`source ${address} penalized (${penalty}): refused for ${this.penalties.blockedFor(address)}s`);
          }
          this.drained?.();
        },
      });
    } catch (err) {
      this.log.error(`cannot set up connection from ${address}: ${(err as Error).stack}`);
      (adopted ?? socket).destroy();
    }
  }

  /**
   * Stops accepting, lets open connections run for up to `drainMs`, then
   * disconnects the rest with "Server shutting down" and removes runtime files.
   */
  async shutdown(drainMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.connections.size > 0) {
      this.log.info(`draining ${this.connections.size} connections for up to ${Math.round(drainMs / 1000)}s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, drainMs);
        this.drained = () => {
          if (this.connections.size > 0) return;
          clearTimeout(timer);
          resolve();
        };
      });
    }
    for (const connection of [...this.connections]) connection.disconnect('Server shutting down');
    this.metricsServer?.close();
    this.stopQuietGc?.();
    await closed;
    this.disposeUpstreams();
  }
}

/** How often refusals are summarized in the log at most. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/**
 * Logs refused connections (penalties, overload) without letting a flood
 * flood the log: one line per reason per interval, with a count.
 */
class RefusalLog {
  private readonly pending = new Map<string, { count: number; last: string }>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly log: Logger) {}

  note(reason: string, address: string): void {
    const entry = this.pending.get(reason);
    if (entry) {
      entry.count++;
      entry.last = address;
      return;
    }
    this.log.warn(`refused a connection from ${address} (${reason})`);
    this.pending.set(reason, { count: 0, last: address });
    this.timer ??= setTimeout(() => this.flush(), REFUSAL_LOG_INTERVAL_MS).unref();
  }

  private flush(): void {
    this.timer = undefined;
    for (const [reason, { count, last }] of this.pending) {
      if (count > 0) this.log.warn(`refused ${count} more connections (${reason}), the last from ${last}`);
    }
    this.pending.clear();
  }
}
