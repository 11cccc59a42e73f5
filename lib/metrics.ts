/**
 * Prometheus metrics (prom-client), served on --metrics-ip/--metrics-port
 * with a /health endpoint for orchestrators. Labels take values from fixed
 * sets only (no user names, no addresses), so cardinality stays bounded.
 */
import http from 'node:http';
import type net from 'node:net';
import client from 'prom-client';
import type { HubEndpoint } from './hub.js';
import { forwardedPackets } from './leg.js';
import { socketRelayTotals } from './socketrelay.js';
import { formatListenAddress, type Logger } from './logger.js';

/** Channel types counted by name; anything else is "other". */
export const CHANNEL_TYPES = [
  'session',
  'direct-tcpip',
  'forwarded-tcpip',
  'x11',
  'auth-agent@openssh.com',
  'direct-streamlocal@openssh.com',
  'forwarded-streamlocal@openssh.com',
] as const;

export function channelTypeLabel(type: string): string {
  return (CHANNEL_TYPES as readonly string[]).includes(type) ? type : 'other';
}

/**
 * A counter of running totals kept elsewhere (the legs', the addon's) and
 * read when it is scraped: each scrape adds what each total grew by since
 * the last, so the hot path counts in a plain number.
 */
function totalsCounter(registry: client.Registry, name: string, help: string, labelName: string, totals: () => Record<string, number>): client.Counter {
  const reported = new Map<string, number>();
  const counter: client.Counter = new client.Counter({
    name,
    help,
    labelNames: [labelName],
    registers: [registry],
    collect: () => {
      for (const [label, total] of Object.entries(totals())) {
        counter.inc({ [labelName]: label }, total - (reported.get(label) ?? 0));
        reported.set(label, total);
      }
    },
  });
  return counter;
}

export class Metrics {
  readonly registry = new client.Registry();

  readonly connections = new client.Gauge({
    name: 'jupyter_ssh_proxy_connections',
    help: 'Open client connections',
    registers: [this.registry],
  });
  readonly authAttempts = new client.Counter({
    name: 'jupyter_ssh_proxy_auth_attempts_total',
    help: 'Authentication attempts by method and result (success, failure, error)',
    labelNames: ['method', 'result'] as const,
    registers: [this.registry],
  });
  readonly hubRequests = new client.Histogram({
    name: 'jupyter_ssh_proxy_hub_request_duration_seconds',
    help: 'JupyterHub API request latency by endpoint',
    labelNames: ['endpoint'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly hubErrors = new client.Counter({
    name: 'jupyter_ssh_proxy_hub_request_errors_total',
    help: 'JupyterHub API requests that failed (no answer, 5xx, garbage) by endpoint',
    labelNames: ['endpoint'] as const,
    registers: [this.registry],
  });
  readonly spawns = new client.Histogram({
    name: 'jupyter_ssh_proxy_spawn_duration_seconds',
    help: 'Time from a login to its server running, for logins that waited for their server to start (one spawn can serve several logins), by result',
    labelNames: ['result'] as const,
    buckets: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300],
    registers: [this.registry],
  });
  /**
   * Byte counts live in each connection (counted per socket chunk, not per
   * packet); the counter catches up with them when it is scraped.
   */
  private readonly trafficSources = new Set<TrafficSource>();
  private readonly reported = { fromClient: 0, toClient: 0 };
  private readonly closed = { fromClient: 0, toClient: 0 };
  readonly bytes = new client.Counter({
    name: 'jupyter_ssh_proxy_bytes_total',
    help: 'Bytes on client connections by direction (from_client, to_client)',
    labelNames: ['direction'] as const,
    registers: [this.registry],
    collect: () => this.syncBytes(),
  });
  readonly packetsForwarded = totalsCounter(
    this.registry,
    'jupyter_ssh_proxy_packets_forwarded_total',
    'Packets forwarded between the legs by path (socket_relay: the native loop on the sockets; relay_loop: the native loop on reads through Node; ssh2: one by one)',
    'path',
    () => ({ relay_loop: forwardedPackets.relayLoop, ssh2: forwardedPackets.oneByOne, socket_relay: socketRelayTotals().relayed }),
  );
  readonly socketRelayBatches = totalsCounter(
    this.registry,
    'jupyter_ssh_proxy_socket_relay_batches_total',
    'Times a socket relay began batching its reads by kind (bulk: bulk data, a full read per wake-up; replies: the small packets that answer bulk data going the other way)',
    'kind',
    () => {
      const totals = socketRelayTotals();
      return { bulk: totals.batches, replies: totals.replyBatches };
    },
  );
  readonly channels = new client.Counter({
    name: 'jupyter_ssh_proxy_channels_opened_total',
    help: 'Channels opened through the proxy by type',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });
  readonly loginKeyExchanges = new client.Counter({
    name: 'jupyter_ssh_proxy_login_key_exchanges_total',
    help: 'Accepted logins by the key exchange method of the client connection (mlkem768x25519-sha256 is post-quantum)',
    labelNames: ['method'] as const,
    registers: [this.registry],
  });
  readonly aesGcmSwitches = new client.Counter({
    name: 'jupyter_ssh_proxy_aes_gcm_switches_total',
    help: 'Client legs switched to AES-GCM for bulk data (--prefer-aes-gcm)',
    registers: [this.registry],
  });
  readonly refusals = new client.Counter({
    name: 'jupyter_ssh_proxy_refusals_total',
    help: 'Connections ended before a session by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'jupyter_ssh_proxy_' });
  }

  /** The Hub client's observer. */
  readonly observeHub = (endpoint: HubEndpoint, seconds: number, failed: boolean): void => {
    this.hubRequests.observe({ endpoint }, seconds);
    if (failed) this.hubErrors.inc({ endpoint });
  };

  /** Counts a connection's traffic from now until `untrack`. */
  trackTraffic(source: TrafficSource): void {
    this.trafficSources.add(source);
  }

  untrackTraffic(source: TrafficSource): void {
    if (!this.trafficSources.delete(source)) return;
    const { fromClient, toClient } = source();
    this.closed.fromClient += fromClient;
    this.closed.toClient += toClient;
  }

  private syncBytes(): void {
    const total = { ...this.closed };
    for (const source of this.trafficSources) {
      const { fromClient, toClient } = source();
      total.fromClient += fromClient;
      total.toClient += toClient;
    }
    this.bytes.inc({ direction: 'from_client' }, total.fromClient - this.reported.fromClient);
    this.bytes.inc({ direction: 'to_client' }, total.toClient - this.reported.toClient);
    this.reported.fromClient = total.fromClient;
    this.reported.toClient = total.toClient;
  }
}

export type TrafficSource = () => { fromClient: number; toClient: number };

/** Serves /metrics and /health; resolves with the bound port. */
export async function serveMetrics(metrics: Metrics, ip: string, port: number, log: Logger): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url === '/metrics') {
      metrics.registry
        .metrics()
        .then((text) => {
          res.setHeader('Content-Type', metrics.registry.contentType);
          res.end(text);
        })
        .catch((err: Error) => {
          res.statusCode = 500;
          res.end(err.message);
        });
    } else if (req.url === '/health') {
      res.setHeader('Content-Type', 'application/json');
      res.end('{"status":"ok"}\n');
    } else {
      res.statusCode = 404;
      res.end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: ip || undefined, port }, () => resolve());
  });
  log.info(`metrics on http://${formatListenAddress(server.address() as net.AddressInfo)}/metrics`);
  return server;
}
