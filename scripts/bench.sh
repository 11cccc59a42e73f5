#!/bin/sh
# `npm run bench [-- --runs N --quick ...]`: installs what the benchmark drives
# (the same as the test suite), builds, and runs bench/run.ts. Not part of npm test.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh --test
# 1,000 concurrent sessions: each is a socket and three pipes in the daemon.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec node dist/bench/run.js "$@"
