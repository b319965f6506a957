#!/usr/bin/env bash
# Installs the system packages and pinned tools the build and tests need, once.
# Idempotent: a second run installs nothing and is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: a C toolchain for -sys crates, node + npm for the EVM tools,
# jq for the main-job script, iproute2 + iptables for the rendezvous tests' simulated NATs (network namespaces),
# runc + busybox-static for the worker's container tests (runc, not crun: crun fails on hybrid cgroups),
# nftables + e2fsprogs for the containers' outbound networking and /output quota.
packages=(build-essential pkg-config nodejs npm iproute2 iptables jq runc busybox-static nftables e2fsprogs)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere (nodesource, nvm): accept working binaries.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs/}")
  missing=("${missing[@]/npm/}")
fi
read -r -a missing <<<"${missing[*]}"
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: missing Debian packages ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The pinned EVM toolchain (solcjs, forge, anvil) in contracts/node_modules.
contracts/scripts/install-tools.sh
