#!/usr/bin/env bash
# What CI runs: install the pinned toolchain if it is missing, run the forge
# tests, then check that the committed artifacts (contracts/artifacts) match
# the sources. Fails (non-zero) if either fails. Extra arguments go to forge,
# e.g. scripts/test.sh --match-contract Gate
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
node_modules/@foundry-rs/forge-linux-amd64/bin/forge test "$@"
scripts/build.sh --check
