#!/bin/sh
# `npm run bench [-- --runs N --quick ...]`: installs what the benchmark drives
# (what the test suite does, and perf for its profiles), builds, and runs
# bench/run.ts. Not part of npm test.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh --bench
# 1,000 concurrent sessions: each is a socket and three pipes in the daemon.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec node dist/bench/run.js "$@"
