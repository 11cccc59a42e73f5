/**
 * Starts a user's server on demand, as JupyterHub's UI does: create a named
 * server if needed, POST to start it, and follow its progress stream, showing
 * each step to the waiting user.
 */
import { createHash } from 'node:crypto';
import type { HubClient, ProgressEvent } from './hub.js';
import type { LoginTarget } from './authorizer.js';

/** A reason the server is not available, as one line for the user. */
export class ServerUnavailableError extends Error {}

export interface ServerStarterOptions {
  startServers: boolean;
  createNamedServers: boolean;
  spawnTimeoutMs: number;
  /** Used for server state and starts; else the user's own token. */
  serviceToken?: string;
  /** The Hub's home page, where users manage their servers. */
  homePage: string;
  /** Where users get tokens. */
  tokenPage: string;
}

function describe(target: LoginTarget): string {
  return target.server === '' ? 'Your server' : `Your server '${target.server}'`;
}

export class ServerStarter {
  /**
   * Starts in flight, by target and the token they use. A login for a target
   * that is being started waits for that start instead of asking the Hub
   * again: 100 simultaneous logins to a stopped server would otherwise race,
   * and all but one would be told "already running" or "pending spawn". The
   * token (its hash, as in the token cache) is part of the key so that a
   * login never gets the verdict of another token's rights (one that may not
   * start servers, say).
   */
  private readonly starts = new Map<string, SharedStart>();

  constructor(private readonly hub: HubClient, private readonly options: ServerStarterOptions) {}

  /**
   * Resolves once the target server runs, starting it if allowed. `progress`
   * receives one line per step (every line so far, for a login that joins a
   * start under way). Throws ServerUnavailableError (for the user) or
   * HubUnavailableError (from the Hub client).
   */
  ensureRunning(target: LoginTarget, userToken: string, progress: (line: string) => void): Promise<void> {
    const token = this.options.serviceToken ?? userToken;
    const key = `${target.hubUser}/${target.server}\n${createHash('sha256').update(token).digest('base64')}`;
    let start = this.starts.get(key);
    if (!start) {
      const shared = new SharedStart();
      start = shared;
      this.starts.set(key, shared);
      shared.run(() => this.startOnce(target, userToken, token, (line) => shared.emit(line))).finally(() => this.starts.delete(key));
    }
    return start.wait(progress);
  }

  private async startOnce(target: LoginTarget, userToken: string, token: string, progress: (line: string) => void): Promise<void> {
    const { homePage } = this.options;
    const user = await this.hub.user(target.hubUser, token);
    if (user === null) {
      // The user's own token was accepted from the cache but may have been
      // revoked since: say so rather than "no such user".
      if (!this.options.serviceToken && (await this.hub.identify(userToken)) === null) {
        throw new ServerUnavailableError(
          `JupyterHub did not accept that token (unknown, expired or revoked); get a new one at ${this.options.tokenPage}`,
        );
      }
      throw new ServerUnavailableError(`JupyterHub has no user '${target.hubUser}'`);
    }
    const server = user.servers?.[target.server];
    if (server?.ready && !server.pending) return;
    if (server?.pending === 'stop') throw new ServerUnavailableError(`${describe(target)} is stopping; try again in a moment`);
    if (server?.pending === 'spawn') {
      // Started by someone else (the Hub's UI, another proxy): wait for it.
      progress(`${describe(target)} is starting; waiting for it...`);
      return this.awaitSpawn(new SpawnProgress(this.hub, target, token, progress, this.options.spawnTimeoutMs, true), target, token);
    }
    if (!this.options.startServers) {
      throw new ServerUnavailableError(`${describe(target)} is not running; start it at ${homePage}`);
    }
    if (target.server !== '' && user.servers && !server && !this.options.createNamedServers) {
      throw new ServerUnavailableError(`You have no server named '${target.server}'; create it at ${homePage}`);
    }

    progress(`${describe(target)} is not running; starting it...`);
    // The Hub answers the POST only after up to slow_spawn_timeout (10 s by
    // default), so the progress stream is followed alongside it.
    const spawn = new SpawnProgress(this.hub, target, token, progress, this.options.spawnTimeoutMs);
    let result: { status: number; message: string };
    try {
      result = await this.hub.startServer(target.hubUser, target.server, token, this.options.spawnTimeoutMs);
    } catch (err) {
      spawn.cancel();
      throw err;
    }
    spawn.postAnswered();
    const { status, message } = result;
    if (status === 201) return spawn.cancel();
    // Someone else started it between our look and our POST.
    if (status === 400 && /already running/i.test(message)) return spawn.cancel();
    if (status === 202 || (status === 400 && /pending spawn/i.test(message))) return this.awaitSpawn(spawn, target, token);
    spawn.cancel();
    throw new ServerUnavailableError(this.explainStartFailure(status, message, target));
  }

  /** Waits for a spawn under way to end, and says how it ended. */
  private async awaitSpawn(spawn: SpawnProgress, target: LoginTarget, token: string): Promise<void> {
    const last = await spawn.finished();
    if (spawn.timedOut) {
      // The spawn goes on in the Hub; only our wait ends.
      throw new ServerUnavailableError(
        `${describe(target)} did not start within ${Math.round(this.options.spawnTimeoutMs / 1000)} seconds; try again later`,
      );
    }
    if (last?.failed) throw new ServerUnavailableError(`${describe(target)} failed to start: ${last.message ?? 'spawn failed'}`);
    if (last?.ready) return;
    // The stream ended without a verdict: ask for the state.
    const after = (await this.hub.user(target.hubUser, token))?.servers?.[target.server];
    if (!after?.ready) throw new ServerUnavailableError(`${describe(target)} did not become ready`);
  }

  private explainStartFailure(status: number, message: string, target: LoginTarget): string {
    const { homePage } = this.options;
    if (status === 400 && /named servers are not enabled/i.test(message)) {
      return `This JupyterHub has no named servers; log in as '${target.hubUser}'`;
    }
    if (status === 400 && /maximum of/i.test(message)) return `Named server limit reached: ${message}`;
    if (status === 400 && /pending stop/i.test(message)) return `${describe(target)} is stopping; try again in a moment`;
    if (status === 403) {
      return this.options.serviceToken
        ? "The proxy's JupyterHub service token may not start servers (it needs the servers scope); tell your administrator"
        : `Your token may not start servers (it needs the servers scope); start the server at ${homePage} or use a token with that scope`;
    }
    if (status === 404) return `JupyterHub has no user '${target.hubUser}'`;
    if (status === 429) return 'JupyterHub is busy starting other servers; try again in a minute';
    if (status >= 500) return `${describe(target)} failed to start: ${message || `HTTP ${status}`}`;
    return `JupyterHub refused to start ${describe(target).toLowerCase()}: ${message || `HTTP ${status}`}`;
  }

}

/** One start of a server, and the logins waiting for it. */
class SharedStart {
  private readonly lines: string[] = [];
  private readonly waiters = new Set<(line: string) => void>();
  private done!: Promise<void>;

  /** Runs the start; the returned promise never rejects (waiters get the error). */
  run(start: () => Promise<void>): Promise<void> {
    this.done = start();
    return this.done.catch(() => undefined);
  }

  emit(line: string): void {
    this.lines.push(line);
    for (const waiter of this.waiters) waiter(line);
  }

  /** Shows `progress` every line so far and each one to come, until the start is over. */
  async wait(progress: (line: string) => void): Promise<void> {
    for (const line of this.lines) progress(line);
    this.waiters.add(progress);
    try {
      await this.done;
    } finally {
      this.waiters.delete(progress);
    }
  }
}

/** How soon to ask for the progress stream again while the Hub has not begun the spawn. */
const PROGRESS_RETRY_MS = 250;

/**
 * Follows a spawn's progress stream from the moment the start is requested,
 * passing each step to `progress`, until the spawn is over, `cancel()` or the
 * spawn timeout.
 */
class SpawnProgress {
  timedOut = false;
  private last?: ProgressEvent;
  private readonly abort = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly done: Promise<void>;

  constructor(
    private readonly hub: HubClient,
    private readonly target: LoginTarget,
    private readonly token: string,
    private readonly progress: (line: string) => void,
    timeoutMs: number,
    /** The spawn is already under way (no POST of ours to wait for). */
    private answered = false,
  ) {
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.abort.abort();
    }, timeoutMs);
    this.done = this.follow();
    // Nobody awaits a cancelled follow: keep its failure from being unhandled.
    this.done.catch(() => undefined);
  }

  /** The POST came back; a stream that says "not starting" now means the spawn is over. */
  postAnswered(): void {
    this.answered = true;
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.abort.abort();
  }

  /** The last event, once the stream is over. Rejects with HubUnavailableError. */
  async finished(): Promise<ProgressEvent | undefined> {
    try {
      await this.done;
    } finally {
      clearTimeout(this.timer);
    }
    return this.last;
  }

  private async follow(): Promise<void> {
    const { signal } = this.abort;
    while (!signal.aborted) {
      const status = await this.hub.followProgress(
        this.target.hubUser,
        this.target.server,
        this.token,
        (event) => this.onEvent(event),
        signal,
      );
      if (status === 200 || signal.aborted) return;
      // 400 / 404: the Hub has not begun the spawn yet (or it is already over).
      if (this.answered) return;
      await new Promise((resolve) => setTimeout(resolve, PROGRESS_RETRY_MS));
    }
  }

  private onEvent(event: ProgressEvent): void {
    this.last = event;
    if (event.failed) return;
    const percent = typeof event.progress === 'number' ? `${event.progress}% ` : '';
    if (event.message) this.progress(`${percent}${event.message}`);
  }
}
