#!/usr/bin/env bash
# The main job: a local SONM network and a job bought and run on it, end to end.
#
# Today (the daemons are not written yet) it runs the parts that exist, wired the
# way the daemons will wire them:
#   1. a local chain (anvil, 1 s blocks) with the real contracts, deployed by sonm-deploy;
#   2. a deal's whole life on it: the supplier's ask, the customer's bid, open, bill, close;
#   3. the example sha256 WASM job in the sandboxed runtime over a directory of input files,
#      its result checked against sha256sum;
# and says which steps of the full flow are still missing. The chain keeps running for you
# to explore until Ctrl-C (or pass --once to stop at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ONCE=0
[[ "${1:-}" == "--once" ]] && ONCE=1
PORT=${SONM_RPC_PORT:-8545}
RPC="http://127.0.0.1:$PORT"
STATE="$ROOT/.local/network"
ANVIL="$ROOT/contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
FORGE="$ROOT/contracts/node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
# anvil's well-known dev keys (accounts 0, 1, 2): local use only.
DEPLOYER_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
SUPPLIER_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
SUPPLIER=0x70997970C51812dc3A010C7d01b50e0d17dc79C8
CONSUMER_KEY=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a
CONSUMER=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
ms() { date +%s%3N; }
since() { echo "$(( $(ms) - $1 )) ms"; }

say "Preparing (installs what is missing, builds; the first run takes a few minutes)"
scripts/install-deps.sh
wasm-runtime/jobs/build.sh >/dev/null
cargo build --quiet -p sonm-contracts --bin sonm-deploy -p sonm-wasm-runtime --bin sonm-wasm-run
rm -rf "$STATE" && mkdir -p "$STATE"

say "1. A local chain with the SONM contracts"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is taken (another anvil?); set SONM_RPC_PORT to use another" >&2
  exit 1
fi
"$ANVIL" --port "$PORT" --block-time 1 --silent >"$STATE/anvil.log" 2>&1 &
ANVIL_PID=$!
cleanup() { kill "$ANVIL_PID" 2>/dev/null || true; wait "$ANVIL_PID" 2>/dev/null || true; }
trap cleanup EXIT
trap 'echo; echo "stopping the chain"; exit 0' INT TERM
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
t=$(ms)
SONM_DEPLOY_KEY=$DEPLOYER_KEY target/debug/sonm-deploy --rpc-url "$RPC" --out "$STATE/addresses.toml" \
  --fund "$SUPPLIER" --fund "$CONSUMER" --fund-snm 1000 >"$STATE/deploy.log"
echo "anvil on $RPC (chain 31337, 1 s blocks); contracts deployed and wired in $(since "$t"):"
sed 's/^/    /' "$STATE/addresses.toml"
addr() { grep -E "^$1 *=" "$STATE/addresses.toml" | head -1 | sed -E 's/.*"(0x[0-9a-fA-F]+)".*/\1/'; }
SNM=$(addr snm)
MARKET=$(addr market)

balance() { # SNM balance of $1, in SNM with 6 decimals
  node -e '
    const [rpc, token, who] = process.argv.slice(1);
    const data = "0x70a08231" + who.slice(2).toLowerCase().padStart(64, "0");
    fetch(rpc, {method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify({jsonrpc: "2.0", id: 1, method: "eth_call", params: [{to: token, data}, "latest"]})})
      .then(r => r.json()).then(j => {
        const wei = BigInt(j.result);
        console.log((Number(wei / 10n ** 12n) / 1e6).toFixed(6));
      });' "$RPC" "$SNM" "$1"
}
SUPPLIER_BEFORE=$(balance $SUPPLIER)
CONSUMER_BEFORE=$(balance $CONSUMER)

say "2. A deal's life on chain: ask, bid, open, bill, close"
t=$(ms)
# Bills pay nothing in forge's simulation (one timestamp), so its gas estimates are low
# for the real transactions: hence the multiplier; receipts show what was used.
(cd contracts && SNM=$SNM MARKET=$MARKET SUPPLIER_KEY=$SUPPLIER_KEY CONSUMER_KEY=$CONSUMER_KEY \
  "$FORGE" script script/LocalDeal.s.sol:LocalDeal --rpc-url "$RPC" --broadcast --slow \
  --gas-estimate-multiplier 300 \
  >"$STATE/deal.log" 2>&1) || { cat "$STATE/deal.log" >&2; exit 1; }
echo "mined in $(since "$t") (block, gas, call):"
node -e '
  const run = require(process.argv[1]);
  run.transactions.forEach((t, i) => {
    const r = run.receipts[i];
    console.log("    block " + String(parseInt(r.blockNumber, 16)).padStart(3) + "  gas " +
      String(parseInt(r.gasUsed, 16)).padStart(7) + "  " + (t.function || t.transactionType).split("(")[0]);
  });' "$ROOT/contracts/cache/broadcast/LocalDeal.s.sol/31337/run-latest.json"
echo "SNM balances: supplier $SUPPLIER_BEFORE -> $(balance $SUPPLIER), customer $CONSUMER_BEFORE -> $(balance $CONSUMER)"
echo "(the ask costs 1e12 wei/s; the customer paid for the seconds the deal was open, the rest of its hour came back)"

say "3. The customer's WASM job: sha256 of every input file, sandboxed and metered"
mkdir -p "$STATE/job/input" "$STATE/job/output"
for i in 1 2 3; do head -c $((i * 1000000)) /dev/urandom >"$STATE/job/input/part-$i.bin"; done
echo "hello from the customer" >"$STATE/job/input/note.txt"
cat >"$STATE/job/job.toml" <<TOML
input_dir = "input"
output_dir = "output"

[module]
path = "$ROOT/wasm-runtime/jobs/build/sha256.wasm"

[limits]
memory_bytes = 67108864
wall_time_ms = 30000
output_bytes = 1048576
TOML
t=$(ms)
target/debug/sonm-wasm-run "$STATE/job/job.toml" | sed 's/^/    /'
echo "ran in $(since "$t") (debug build of the runner; see wasm-runtime/README.md for release numbers)"
(cd "$STATE/job/input" && sha256sum -- * | sort -k2) >"$STATE/job/expected"
sort -k2 "$STATE/job/output/SHA256SUMS" >"$STATE/job/got"
if diff -q "$STATE/job/expected" "$STATE/job/got" >/dev/null; then
  echo "output/SHA256SUMS matches sha256sum for all $(wc -l <"$STATE/job/got") files"
else
  echo "output/SHA256SUMS differs from sha256sum:" >&2
  diff "$STATE/job/expected" "$STATE/job/got" >&2 || true
  exit 1
fi

say "Not there yet (issues 5-9)"
cat <<TXT
    - sonm-worker selling this box through an ask plan and running the job under the deal
    - sonm-node and the sonm CLI buying it (the deal above is driven by a forge script)
    - sonm-dwh indexing the chain, sonm-rendezvous connecting customer and worker over QUIC
    - the worker's signed usage receipt for the job
TXT

if ((ONCE)) || [[ ! -t 0 ]]; then
  exit 0
fi
say "The chain stays up at $RPC for you to explore; Ctrl-C stops it."
echo "    addresses: $STATE/addresses.toml   logs: $STATE/"
wait "$ANVIL_PID"
