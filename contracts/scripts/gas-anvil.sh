#!/usr/bin/env bash
# Runs script/GasLifecycle.s.sol against a throwaway local anvil and prints
# each transaction's gasUsed from the receipts (what a user actually pays).
# Anvil mines every transaction in its own block, one second apart, so the
# three bills each bill a second or so: the same code path as hourly bills.
# The simulation runs at one timestamp (bills owe nothing there), hence the
# generous gas limits: receipts report what was used, not the limit.
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
node -e '
const run = require(process.argv[1]);
const rows = run.transactions.map((t, i) => [t.function || ("deploy " + t.contractName), parseInt(run.receipts[i].gasUsed, 16)]);
// The measured life is the last 7 transactions.
const life = rows.slice(-7);
for (const [f, g] of life) console.log(String(g).padStart(8) + "  " + f);
console.log(String(life.reduce((s, r) => s + r[1], 0)).padStart(8) + "  total");
' "$PWD/$(ls -t cache/broadcast/GasLifecycle.s.sol/*/run-latest.json | head -1)"
