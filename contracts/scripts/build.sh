#!/usr/bin/env bash
# Compiles the contracts and writes contracts/artifacts/<Name>.json (ABI,
# creation and runtime bytecode) for SNM, Market, ProfileRegistry, Blacklist,
# Gate and OracleUSD. The artifacts are committed, so that Rust builds need no
# Solidity toolchain; the output is deterministic (same sources, same
# pinned compiler and settings: same bytes).
#
#   scripts/build.sh          regenerate contracts/artifacts/
#   scripts/build.sh --check  fail (exit 1) if the committed artifacts are
#                             stale against the sources
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
node_modules/@foundry-rs/forge-linux-amd64/bin/forge build --quiet

if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  node scripts/export-artifacts.js "$tmp"
  if ! diff -r -q artifacts "$tmp" >/dev/null 2>&1; then
    diff -r -q artifacts "$tmp" || true
    echo "build.sh: contracts/artifacts is stale; run contracts/scripts/build.sh and commit the result" >&2
    exit 1
  fi
  echo "build.sh: artifacts up to date"
else
  node scripts/export-artifacts.js artifacts
  echo "build.sh: wrote $(ls artifacts | wc -l) artifacts to contracts/artifacts"
fi
