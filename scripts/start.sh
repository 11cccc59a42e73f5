#!/bin/sh
# `npm start -- [options] URL`: installs what the daemon needs, builds, runs it.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
# Same node flags and malloc settings as deploy/jupyter-ssh-proxy.service (why: see there).
export LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true,tcache_max:1024 MALLOC_ARENA_MAX=2
exec node --max-semi-space-size=2 --initial-old-space-size=96 --heap-growing-percent=100 --expose-gc bin/jupyter_ssh_proxy "$@"
