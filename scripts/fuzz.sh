#!/bin/sh
# `npm run fuzz [-- --cases N --seed S ...]`: installs what the fuzz target
# needs (the same as the test suite: JupyterHub, OpenSSH), builds, and runs
# fuzz/run.ts against the real daemon. Not part of npm test (test/fuzz.test.ts
# runs a short fuzz inside the suite). See fuzz/README.md.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh --test
exec node dist/fuzz/run.js "$@"
