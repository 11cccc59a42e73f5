/**
 * Ties SSH sessions to their Jupyter server's life, in both directions:
 * - while traffic flows, it posts activity to the Hub, so that
 *   jupyterhub-idle-culler does not stop a server used over SSH only;
 * - when the server is stopped from the Hub (UI, culler, admin), it ends the
 *   sessions with a message.
 *
 * One watch per server and token, shared by every session on that server
 * with that token: a user's 1,000 sessions (or VS Code's handful) cost the
 * Hub one poll and at most one activity report per interval, not one per
 * session, and the daemon two timers, not two per session.
 */
import { createHash } from 'node:crypto';
import type { LoginTarget } from './authorizer.js';
import type { HubClient } from './hub.js';

export interface ServerWatchOptions {
  activityIntervalMs: number;
  pollIntervalMs: number;
}

/** What a watch needs of a session. */
export interface WatchedSession {
  /** Bytes moved so far, read at each tick: no cost per packet. */
  traffic(): number;
  /** The server is gone: end the session with `message`. */
  onStopped(message: string): void;
}

type Log = (level: string, message: string) => void;

/** All the daemon's watches, by server and token. */
export class ServerWatches {
  private readonly watches = new Map<string, SharedWatch>();

  constructor(
    private readonly hub: HubClient,
    private readonly options: ServerWatchOptions,
    private readonly log: Log,
  ) {}

  /**
   * Watches `target` for `session`, with `token` (the service token, or the
   * user's own: its default scopes cover both calls). Returns the function
   * that ends the watch for this session.
   */
  watch(target: LoginTarget, token: string, session: WatchedSession): () => void {
    // The token's hash, not the token: a map key is easy to print by mistake.
    const key = `${target.hubUser}/${target.server}\n${createHash('sha256').update(token).digest('base64')}`;
    const watch = this.watches.get(key) ?? this.start(key, target, token);
    watch.add(session);
    return () => watch.remove(session);
  }

  private start(key: string, target: LoginTarget, token: string): SharedWatch {
    // A watch stops once (last session gone, or server stopped) and leaves
    // the map right then: a later session for the same key starts a new one.
    const watch = new SharedWatch(this.hub, target, token, this.log, () => this.watches.delete(key));
    this.watches.set(key, watch);
    watch.start(this.options);
    return watch;
  }

  /** How many watches run (for tests). */
  get size(): number {
    return this.watches.size;
  }
}

/** One server watched with one token, for every session that shares them. */
class SharedWatch {
  /** Each session with its traffic at the last activity check. */
  private readonly sessions = new Map<WatchedSession, number>();
  private readonly timers: NodeJS.Timeout[] = [];
  /** Set once the last session left or the server stopped; a check already under way then changes nothing. */
  private stopped = false;

  constructor(
    private readonly hub: HubClient,
    private readonly target: LoginTarget,
    private readonly token: string,
    private readonly log: Log,
    private readonly onEmpty: () => void,
  ) {}

  start(options: ServerWatchOptions): void {
    const every = (ms: number, task: () => Promise<void>) => {
      const timer = setInterval(() => void task().catch((err: Error) => this.log('warn', `${this.what()}: ${err.message}`)), ms);
      timer.unref();
      this.timers.push(timer);
    };
    every(options.activityIntervalMs, () => this.reportActivity());
    every(options.pollIntervalMs, () => this.checkServer());
  }

  add(session: WatchedSession): void {
    this.sessions.set(session, session.traffic());
  }

  remove(session: WatchedSession): void {
    if (!this.sessions.delete(session) || this.sessions.size > 0) return;
    this.stop();
  }

  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    this.timers.length = 0;
    this.onEmpty();
  }

  private what(): string {
    return this.target.server === '' ? `server of ${this.target.hubUser}` : `server ${this.target.hubUser}/${this.target.server}`;
  }

  /** One report when any session moved data since the last check. */
  private async reportActivity(): Promise<void> {
    let moved = false;
    for (const [session, last] of this.sessions) {
      const now = session.traffic();
      if (now !== last) {
        moved = true;
        this.sessions.set(session, now);
      }
    }
    if (!moved || this.stopped) return;
    await this.hub.postActivity(this.target.hubUser, this.target.server, this.token, new Date());
    const n = this.sessions.size;
    this.log('debug', `activity reported to JupyterHub for the ${this.what()} (${n} ${n === 1 ? 'session' : 'sessions'})`);
  }

  private async checkServer(): Promise<void> {
    const user = await this.hub.user(this.target.hubUser, this.token);
    // No answer, or no server states visible: keep the sessions (a Hub outage must not end sessions).
    if (!user?.servers || this.stopped) return;
    const server = user.servers[this.target.server];
    if (server?.ready && server.pending !== 'stop') return;
    const which = this.target.server === '' ? 'Your JupyterHub server' : `Your JupyterHub server '${this.target.server}'`;
    const sessions = [...this.sessions.keys()];
    this.sessions.clear();
    this.stop();
    for (const session of sessions) session.onStopped(`${which} was stopped, so this SSH session ends`);
  }
}
