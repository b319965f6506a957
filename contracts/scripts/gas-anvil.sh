#!/usr/bin/env bash
# Runs the spot deal lives of the README's gas table as real transactions on
# a throwaway local anvil and prints each transaction's gasUsed from the
# receipts (what a user actually pays): placed orders (place ask, place bid,
# open, 3 bills, close) and signed orders (open, 3 bills, close) for authors
# with a fresh and with a warm nonce word.
#
# script/GasLifecycle.s.sol deploys and opens the deals (forge script). The
# bills and the close each take the deal's current state, which depends on
# the mined timestamps, so they are sent afterwards from node over JSON-RPC
# (anvil's unlocked dev accounts), the state rebuilt from the previous
# receipts' events as a client would. Anvil mines a block every second, so
# each bill bills a second or so: the same code path as hourly bills.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
ANVIL=node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
FORGE=node_modules/@foundry-rs/forge-linux-amd64/bin/forge
PORT=${ANVIL_PORT:-18545}
"$ANVIL" --port "$PORT" --silent --block-time 1 --hardfork cancun &
ANVIL_PID=$!
trap 'kill "$ANVIL_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
"$FORGE" script script/GasLifecycle.s.sol:GasLifecycle --rpc-url "http://127.0.0.1:$PORT" --broadcast --slow \
  --gas-estimate-multiplier 300 >/dev/null
node scripts/gas-anvil-lives.js "http://127.0.0.1:$PORT" \
  "$PWD/$(ls -t cache/broadcast/GasLifecycle.s.sol/*/run-latest.json | head -1)"
