/**
 * Starts a user's server on demand, as JupyterHub's UI does: create a named
 * server if needed, POST to start it, and follow its progress stream, showing
 * each step to the waiting user.
 */
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
}

function describe(target: LoginTarget): string {
  return target.server === '' ? 'Your server' : `Your server '${target.server}'`;
}

export class ServerStarter {
  constructor(private readonly hub: HubClient, private readonly options: ServerStarterOptions) {}

  /**
   * Resolves once the target server runs, starting it if allowed. `progress`
   * receives one line per step. Throws ServerUnavailableError (for the user)
   * or HubUnavailableError (from the Hub client).
   */
  async ensureRunning(target: LoginTarget, userToken: string, progress: (line: string) => void): Promise<void> {
    const token = this.options.serviceToken ?? userToken;
    const { homePage } = this.options;
    const user = await this.hub.user(target.hubUser, token);
    if (user === null) throw new ServerUnavailableError(`JupyterHub has no user '${target.hubUser}'`);
    const server = user.servers?.[target.server];
    if (server?.ready && !server.pending) return;
    if (server?.pending === 'stop') throw new ServerUnavailableError(`${describe(target)} is stopping; try again in a moment`);
    if (!this.options.startServers) {
      throw new ServerUnavailableError(`${describe(target)} is not running; start it at ${homePage}`);
    }
    if (target.server !== '' && user.servers && !server && !this.options.createNamedServers) {
      throw new ServerUnavailableError(`You have no server named '${target.server}'; create it at ${homePage}`);
    }

    progress(`${describe(target)} is not running; starting it...`);
    const { status, message } = await this.hub.startServer(target.hubUser, target.server, token);
    if (status === 201) return;
    if (status !== 202) throw new ServerUnavailableError(this.explainStartFailure(status, message, target));
    await this.waitUntilReady(target, token, progress);
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

  private async waitUntilReady(target: LoginTarget, token: string, progress: (line: string) => void): Promise<void> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.options.spawnTimeoutMs);
    let last: ProgressEvent | undefined;
    try {
      await this.hub.followProgress(
        target.hubUser,
        target.server,
        token,
        (event) => {
          last = event;
          if (event.failed) return;
          const percent = typeof event.progress === 'number' ? `${event.progress}% ` : '';
          if (event.message) progress(`${percent}${event.message}`);
        },
        abort.signal,
      );
    } catch (err) {
      if (abort.signal.aborted) {
        // The spawn goes on in the Hub; only our wait ends.
        throw new ServerUnavailableError(
          `${describe(target)} did not start within ${Math.round(this.options.spawnTimeoutMs / 1000)} seconds; try again later`,
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (last?.failed) throw new ServerUnavailableError(`${describe(target)} failed to start: ${last.message ?? 'spawn failed'}`);
    if (last?.ready) return;
    // The stream ended without a verdict: ask for the state.
    const server = (await this.hub.user(target.hubUser, token))?.servers?.[target.server];
    if (!server?.ready) throw new ServerUnavailableError(`${describe(target)} did not become ready`);
  }
}
