/**
 * The daemon's memory allocator, as its start-up environment chose it.
 *
 * Wherever the daemon is started (deploy/jupyter-ssh-proxy.service,
 * `npm start`, the README's managed-service entry) it runs with jemalloc
 * preloaded: after a burst of transfers glibc's malloc kept ~80 MiB of freed
 * buffers resident for good (RSS 180 MiB instead of 90; bench/README.md,
 * "Levers"), jemalloc gives them back within seconds. Its background thread
 * does the giving back: without it jemalloc purges only while the daemon
 * allocates, and a daemon that went quiet after 100 parallel transfers kept
 * 25-65 MiB of their pages (bench/README.md, "Memory after a burst").
 * These settings are the daemon's alone: the processes it starts (sshd per
 * connection, getent) get an environment without them, since sshd with
 * jemalloc preloaded takes ~470 KiB more per session.
 */
import fs from 'node:fs';

/** Variables that tune only the daemon's allocator. */
const ALLOCATOR_VARIABLES = ['MALLOC_CONF', 'MALLOC_ARENA_MAX'];

/** The name jemalloc gives its background purging thread. */
const JEMALLOC_BACKGROUND_THREAD = 'jemalloc_bg_thd';

/** Which malloc this process runs with, for the start-up log; for jemalloc, whether its background thread purges. */
export function activeAllocator(maps = readOwnMaps(), threadNames = readOwnThreadNames()): string {
  if (!/\/libjemalloc\.so/.test(maps)) return 'glibc malloc';
  return threadNames.includes(JEMALLOC_BACKGROUND_THREAD)
    ? 'jemalloc with background purging'
    : 'jemalloc WITHOUT background purging (add background_thread:true to MALLOC_CONF)';
}

function readOwnMaps(): string {
  try {
    return fs.readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return '';
  }
}

function readOwnThreadNames(): string[] {
  try {
    return fs.readdirSync('/proc/self/task').map((tid) => fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim());
  } catch {
    return [];
  }
}

/** `env` without the daemon's allocator settings: the environment for the processes it starts. */
export function childEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env };
  for (const name of ALLOCATOR_VARIABLES) delete out[name];
  if (out.LD_PRELOAD !== undefined) {
    // ld.so separates entries by spaces or colons; keep any of the operator's own.
    const kept = out.LD_PRELOAD.split(/[\s:]+/).filter((entry) => entry !== '' && !/(^|\/)libjemalloc\.so/.test(entry));
    if (kept.length > 0) out.LD_PRELOAD = kept.join(':');
    else delete out.LD_PRELOAD;
  }
  return out;
}
