/**
 * The daemon: loads host keys, prepares the upstream, accepts connections.
 * Each connection is isolated: an error in one closes only that one.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { hostKeyAlgorithms, clientOffer, serverOffer } from './algorithms.js';
import { HubAuthorizer } from './authorizer.js';
import { FAILED_TOKEN_CACHE_MS, IDENT, type ProxyConfig } from './config.js';
import { Connection, type ConnectionSettings } from './connection.js';
import { loadHostKeys } from './hostkeys.js';
import { HubClient } from './hub.js';
import { LocalSshdUpstream } from './localsshd.js';
import { ServerStarter } from './servers.js';
import type { Logger } from './logger.js';
import { Metrics, serveMetrics } from './metrics.js';
import { cryptoReady, installedSsh2Version, nativeCryptoAvailable, type ParsedKey } from './ssh2internals.js';

export class ProxyServer {
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private upstream?: LocalSshdUpstream;
  private readonly metrics = new Metrics();
  private metricsServer?: http.Server;
  private settings?: ConnectionSettings;

  constructor(private readonly config: ProxyConfig, private readonly log: Logger) {
    this.server = net.createServer((socket) => this.accept(socket));
  }

  /** Prepares everything and listens; resolves with the bound address. */
  async listen(): Promise<net.AddressInfo> {
    try {
      return await this.prepareAndListen();
    } catch (err) {
      this.metricsServer?.close();
      this.upstream?.dispose();
      throw err;
    }
  }

  private async prepareAndListen(): Promise<net.AddressInfo> {
    await cryptoReady;
    const { keys, generated } = loadHostKeys(this.config.keyDir);
    for (const file of generated) this.log.info(`generated host key ${file}`);
    const hostKeys: Record<string, ParsedKey> = {};
    for (const { key } of keys) for (const algo of hostKeyAlgorithms(key.type)) hostKeys[algo] ??= key;

    this.upstream = new LocalSshdUpstream({
      sshdPath: this.config.sshdPath,
      unixUserTemplate: this.config.unixUser,
      runtimeDir: this.config.runtimeDir,
      sshdOptions: this.config.sshdOptions,
    });
    const problem = await this.upstream.check();
    if (problem) this.log.warn(`${problem}; logins will fail until this is fixed`);

    const hub = new HubClient({
      apiUrl: this.config.hubApiUrl,
      timeoutMs: this.config.hubTimeoutMs,
      ca: this.config.hubCa ? fs.readFileSync(this.config.hubCa) : undefined,
      maxConcurrent: this.config.hubConcurrency,
      observe: this.metrics.observeHub,
    });
    const { serviceToken, tokenPage } = this.config;
    this.settings = {
      ident: IDENT,
      hostKeys,
      serverOffer: serverOffer(Object.keys(hostKeys)),
      clientOffer: clientOffer(),
      authorizer: new HubAuthorizer(hub, {
        separator: this.config.separator,
        cacheTtlMs: this.config.authCacheTtlMs,
        failureCacheTtlMs: FAILED_TOKEN_CACHE_MS,
        serviceToken,
        tokenPage,
      }),
      servers: new ServerStarter(hub, {
        startServers: this.config.startServers,
        createNamedServers: this.config.createNamedServers,
        spawnTimeoutMs: this.config.spawnTimeoutMs,
        serviceToken,
        homePage: this.config.homePage,
      }),
      hub,
      serviceToken,
      watch: { activityIntervalMs: this.config.activityIntervalMs, pollIntervalMs: this.config.serverPollIntervalMs },
      upstream: this.upstream,
      tokenPage,
      maxAuthTries: this.config.maxAuthTries,
      loginGraceTimeMs: this.config.loginGraceTimeMs,
      upstreamLoginTimeoutMs: 30_000,
      maxQueuedBytes: this.config.maxQueuedBytes,
      metrics: this.metrics,
    };
    if (!serviceToken) this.log.info('no JUPYTERHUB_API_TOKEN: users\' own tokens are used to start servers and report activity');
    this.log.info(
      `ssh2 ${installedSsh2Version()}, native crypto binding ${nativeCryptoAvailable ? 'available' : 'NOT built (slower fallback)'}`,
    );

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
    const address = this.server.address() as net.AddressInfo;
    this.log.info(`listening on ${address.address}:${address.port}, JupyterHub API at ${this.config.hubApiUrl}`);
    return address;
  }

  private accept(socket: net.Socket): void {
    try {
      const connection = new Connection(socket, this.settings!, this.log);
      this.connections.add(connection);
      connection.start(() => this.connections.delete(connection));
    } catch (err) {
      this.log.error(`cannot set up connection from ${socket.remoteAddress}: ${(err as Error).stack}`);
      socket.destroy();
    }
  }

  /** Stops listening, disconnects everyone with `message` and removes runtime files. */
  async close(message = 'Server shutting down'): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const connection of [...this.connections]) connection.disconnect(message);
    this.metricsServer?.close();
    await closed;
    this.upstream?.dispose();
  }
}
