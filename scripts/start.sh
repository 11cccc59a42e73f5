#!/bin/sh
# `npm start -- [options] URL`: installs what the daemon needs, builds, runs it.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
exec node bin/jupyter_ssh_proxy "$@"
