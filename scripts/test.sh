#!/bin/sh
# `npm test`: installs what the suite needs, builds, and runs every test.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh --test
exec npx mocha "$@"
