import type { ClientLegAlgorithms, PreferAesGcm } from './algorithms.js';
import type { PenaltyConfig } from './penalties.js';

/** A setting the daemon cannot work with, found as it loads: it stops (or a reload is refused) with the message, one line. */
export class ConfigError extends Error {}

/** The daemon's settings, as the CLI resolves them. */
export interface ProxyConfig {
  /** Address to listen on; '' means all interfaces. */
  ip: string;
  port: number;
  keyDir: string;
  /** What clients may negotiate (--kex-algorithms, --ciphers, --macs, --host-key-algorithms). */
  algorithms: ClientLegAlgorithms;
  /** Which clients that offer AES-GCM are switched to it when they move bulk data (--prefer-aes-gcm). */
  preferAesGcm: PreferAesGcm;
  /** The Hub's REST API root, e.g. http://127.0.0.1:8000/hub/api */
  hubApiUrl: string;
  /** The Hub's page for tokens, shown to users. */
  tokenPage: string;
  /** The Hub's home page, where users manage their servers. */
  homePage: string;
  /** A JupyterHub service token (JUPYTERHUB_API_TOKEN), for calls a user's token may lack scopes for. */
  serviceToken?: string;
  hubTimeoutMs: number;
  hubCa?: string;
  hubConcurrency: number;
  authCacheTtlMs: number;
  separator: string;
  startServers: boolean;
  createNamedServers: boolean;
  spawnTimeoutMs: number;
  activityIntervalMs: number;
  serverPollIntervalMs: number;
  logLevel: string;
  logFormat: 'text' | 'json';
  /** Metrics are served only when a port is given. */
  metricsIp: string;
  metricsPort?: number;
  unixUser: string;
  /** Where sessions run: an sshd on this machine per login, or the user's server's own (its server extension). */
  upstream: 'local-sshd' | 'websocket';
  /** With `upstream: 'websocket'`: where the Hub's proxy serves users' servers (the URL argument). */
  serversUrl?: string;
  /** With `upstream: 'websocket'`: WebSocket messages, never the raw stream after the upgrade. */
  websocketFrames?: boolean;
  /** Where an account lists keys that log in without a token (sshd's AuthorizedKeysFile syntax); unset: tokens only. */
  authorizedKeysFile?: string;
  /** Authorities whose user certificates log in the Hub users they name (sshd's TrustedUserCAKeys); unset: none. */
  trustedUserCaKeys?: string;
  /** Keys and certificates that may not log in, a key list or an OpenSSH KRL (sshd's RevokedKeys); unset: none. */
  revokedKeys?: string;
  sshdPath: string;
  sshdOptions: string[];
  runtimeDir: string;
  maxAuthTries: number;
  loginGraceTimeMs: number;
  maxQueuedBytes: number;
  /** OpenSSH's MaxStartups start:rate:full for unauthenticated connections. */
  maxStartups: { start: number; rate: number; full: number };
  /** Connections at most, authenticated or not. */
  maxSessions: number;
  /** Undefined when penalties are off. */
  penalties?: PenaltyConfig;
  drainTimeoutMs: number;
  pidFile?: string;
}

/** Identifies the proxy in its SSH version string. */
export const IDENT = 'jupyter-ssh-proxy_0.1';

/** How long a token the Hub rejected stays rejected without asking again. */
export const FAILED_TOKEN_CACHE_MS = 10_000;
