// One real JupyterHub, one unix + Hub user with a token, and one proxy daemon
// per describe block. Each test file gets its own, so files stay independent.
import { createHubUser, createToken, startHub, type Hub, type HubOptions } from './hub.js';
import { startProxy, type ProxyProcess, type StartProxyOptions } from './proxy.js';
import { createUnixUser, type UnixUser } from './unixuser.js';
import { ssh, type RunResult, type SshRunOptions } from './ssh.js';

export interface Env {
  hub: Hub;
  user: UnixUser;
  token: string;
  proxy: ProxyProcess;
  /** ssh through the proxy as the fixture user. */
  ssh(command: string[], extra?: string[], options?: SshRunOptions): Promise<RunResult>;
}

export interface EnvOptions {
  hub?: HubOptions;
  proxyArgs?: string[];
  proxyOptions?: StartProxyOptions;
  /** Give the daemon the Hub's service token (JUPYTERHUB_API_TOKEN), as docs/deploy.md sets it up. */
  serviceToken?: boolean;
}

/** Registers before/after hooks; the returned object is filled in by `before`. */
export function useEnv(options: EnvOptions = {}): Env {
  const env = {} as Env;
  before(async function () {
    this.timeout(240_000);
    env.hub = await startHub(options.hub);
    env.user = await createUnixUser('t');
    await createHubUser(env.hub, env.user.name);
    env.token = (await createToken(env.hub, env.user.name)).token;
    const proxyOptions = options.serviceToken
      ? { ...options.proxyOptions, env: { ...options.proxyOptions?.env, JUPYTERHUB_API_TOKEN: env.hub.serviceToken } }
      : options.proxyOptions;
    env.proxy = await startProxy(env.hub.url, options.proxyArgs, proxyOptions);
    env.ssh = (command, extra = [], runOptions = {}) =>
      ssh(env.proxy.port, env.user.name, env.token, command, extra, runOptions);
  });
  after(async function () {
    this.timeout(60_000);
    await env.proxy?.stop();
    await env.user?.remove();
    await env.hub?.stop();
  });
  return env;
}
