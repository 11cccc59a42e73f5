/**
 * Ties an SSH session to its Jupyter server's life, in both directions:
 * - while traffic flows, it posts activity to the Hub, so that
 *   jupyterhub-idle-culler does not stop a server used over SSH only;
 * - when the server is stopped from the Hub (UI, culler, admin), it ends the
 *   session with a message.
 */
import type { LoginTarget } from './authorizer.js';
import type { HubClient } from './hub.js';

export interface ServerWatchOptions {
  activityIntervalMs: number;
  pollIntervalMs: number;
}

export class ServerWatch {
  private lastTraffic: number;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly hub: HubClient,
    private readonly target: LoginTarget,
    /** The service token, or the user's own (its default scopes cover both calls). */
    private readonly token: string,
    /** Bytes moved so far, read at each tick: no cost per packet. */
    private readonly traffic: () => number,
    private readonly onStopped: (message: string) => void,
    private readonly log: (level: string, message: string) => void,
  ) {
    this.lastTraffic = traffic();
  }

  start(options: ServerWatchOptions): void {
    const every = (ms: number, task: () => Promise<void>) => {
      const timer = setInterval(() => void task().catch((err: Error) => this.log('warn', err.message)), ms);
      timer.unref();
      this.timers.push(timer);
    };
    every(options.activityIntervalMs, () => this.reportActivity());
    every(options.pollIntervalMs, () => this.checkServer());
  }

  stop(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.timers.length = 0;
  }

  private async reportActivity(): Promise<void> {
    const now = this.traffic();
    if (now === this.lastTraffic) return;
    this.lastTraffic = now;
    await this.hub.postActivity(this.target.hubUser, this.target.server, this.token, new Date());
    this.log('debug', 'activity reported to JupyterHub');
  }

  private async checkServer(): Promise<void> {
    const user = await this.hub.user(this.target.hubUser, this.token);
    // No answer, or no server states visible: keep the session (a Hub outage must not end sessions).
    if (!user?.servers) return;
    const server = user.servers[this.target.server];
    if (server?.ready && server.pending !== 'stop') return;
    this.stop();
    const which = this.target.server === '' ? 'Your JupyterHub server' : `Your JupyterHub server '${this.target.server}'`;
    this.onStopped(`${which} was stopped, so this SSH session ends`);
  }
}
