#!/bin/sh
# `npm start -- [options] URL`: installs what the daemon needs, builds, runs it.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
# Same node flag as deploy/jupyter-ssh-proxy.service (why: see there).
exec node --max-semi-space-size=2 bin/jupyter_ssh_proxy "$@"
