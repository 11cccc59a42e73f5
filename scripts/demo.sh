#!/bin/sh
# `npm run demo [-- --port N]`: installs what the demo drives (Debian's
# jupyterhub, OpenSSH, the npm packages; builds dist/), then runs a throwaway
# JupyterHub with a demo user and the proxy in front of it. Ctrl-C removes it all.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh --test
exec node dist/demo/demo.js "$@"
