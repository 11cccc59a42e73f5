/** The daemon's settings, as the CLI resolves them. */
export interface ProxyConfig {
  /** Address to listen on; '' means all interfaces. */
  ip: string;
  port: number;
  keyDir: string;
  /** The JupyterHub's public URL, e.g. http://127.0.0.1:8000 */
  hubUrl: string;
  hubTimeoutMs: number;
  hubCa?: string;
  logLevel: string;
  unixUser: string;
  sshdPath: string;
  sshdOptions: string[];
  runtimeDir: string;
  maxAuthTries: number;
  loginGraceTimeMs: number;
  maxQueuedBytes: number;
}

/** Identifies the proxy in its SSH version string. */
export const IDENT = 'jupyter-ssh-proxy_0.1';
