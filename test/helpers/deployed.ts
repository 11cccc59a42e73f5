/**
 * How the daemon is deployed: the node flags and environment that the
 * systemd unit, `npm start` and the README's managed-service entry all use
 * (why: deploy/jupyter-ssh-proxy.service). The bench and the managed-service
 * test run the daemon with these; test/deployed.test.ts checks that the three
 * launchers still say the same.
 */
export const DAEMON_NODE_ARGS = ['--max-semi-space-size=2', '--initial-old-space-size=96', '--heap-growing-percent=100', '--expose-gc'];

export const DAEMON_ENV: Record<string, string> = {
  LD_PRELOAD: 'libjemalloc.so.2',
  MALLOC_CONF: 'narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true,tcache_max:1024',
  MALLOC_ARENA_MAX: '2',
};
