#!/usr/bin/env bash
# Installs the pinned, offline Solidity toolchain into contracts/node_modules:
# solcjs (npm `solc`), forge and anvil (npm `@foundry-rs/*`), exactly as
# package-lock.json records them. Idempotent: when the installed tools already
# answer with the pinned versions it does nothing.
#
# Needs node + npm and access to the npm registry the first time only.
set -euo pipefail
cd "$(dirname "$0")/.."

SOLC_VERSION=0.8.37
FOUNDRY_VERSION=1.7.1
FORGE=node_modules/@foundry-rs/forge-linux-amd64/bin/forge
ANVIL=node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil

installed_ok() {
  [ -x "$FORGE" ] && [ -x "$ANVIL" ] || return 1
  "$FORGE" --version 2>/dev/null | grep -q "Version: $FOUNDRY_VERSION" || return 1
  "$ANVIL" --version 2>/dev/null | grep -q "$FOUNDRY_VERSION" || return 1
  node scripts/solc-wrapper.js --version 2>/dev/null | grep -q "Version: $SOLC_VERSION+" || return 1
}

if installed_ok; then
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-tools.sh: only linux x86_64 is supported (forge/anvil binaries are per platform)" >&2; exit 1 ;;
esac
command -v npm >/dev/null || { echo "install-tools.sh: npm is required" >&2; exit 1; }

# --ignore-scripts: the @foundry-rs postinstall hooks only re-check what npm
# already installed through the per-platform optional dependency, and newer
# npm versions refuse to run them unapproved anyway. Nothing else has scripts.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

installed_ok || { echo "install-tools.sh: tools installed but do not report the pinned versions" >&2; exit 1; }
echo "install-tools.sh: solc $SOLC_VERSION, forge and anvil $FOUNDRY_VERSION ready"
