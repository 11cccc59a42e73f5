#!/bin/sh
# `npm start -- [options] URL`: installs what the daemon needs, builds, runs it.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
# Same node flag and malloc setting as deploy/jupyter-ssh-proxy.service (why: see there).
export MALLOC_ARENA_MAX=2
exec node --max-semi-space-size=2 bin/jupyter_ssh_proxy "$@"
