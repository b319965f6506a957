#!/usr/bin/env bash
# The main job: a whole local SONM network, and a WASM job bought and run on it end to end.
#
#   1. a local chain (anvil, 1 s blocks) with the real contracts, deployed by sonm-deploy,
#      and sonm-dwh indexing it into LMDB;
#   2. sonm-rendezvous, and a supplier's sonm-worker: it measures the box, sells a slice of it
#      as an ask signed off chain and published to the DWH's book (nothing placed on chain),
#      and publishes itself to the rendezvous from its task service's socket;
#   3. a customer's sonm-node, searching the market through the DWH, driven through the sonm
#      CLI: finds the ask, buys it, runs the example sha256 WASM job on a directory of input
#      files on the worker (whose address the node is not told: it reaches the worker through
#      the rendezvous, by a hole-punched direct path or the relay), fetches the result with
#      the worker's signed usage receipt (verified), and closes the deal;
#   4. balances before and after, and the deal as the DWH indexed it.
# Run as root (with iproute2 and iptables), the worker sits in a network namespace behind a
# simulated NAT, so that the node can reach it only through the rendezvous server; otherwise
# (or with SONM_NAT=none) every party is on 127.0.0.1. SONM_NAT=symmetric makes the NAT one
# that defeats hole punching, so the relay carries the job.
# The network stays up for you to explore with the CLI until Ctrl-C (or pass --once).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ONCE=0
[[ "${1:-}" == "--once" ]] && ONCE=1
PORT=${SONM_RPC_PORT:-8545}
RPC="http://127.0.0.1:$PORT"
WORKER_LISTEN=127.0.0.1:${SONM_WORKER_PORT:-15010}
NODE_LISTEN=127.0.0.1:${SONM_NODE_PORT:-15030}
DWH_LISTEN=127.0.0.1:${SONM_DWH_PORT:-8090}
RV_PORT=${SONM_RENDEZVOUS_PORT:-7666}
NAT=${SONM_NAT:-port-restricted}   # port-restricted (MASQUERADE), symmetric, or none
# The simulated NAT (root only): the host's end of a veth pair to a router namespace, which
# masquerades a worker namespace's LAN behind its own address. Subnets apart from those of the
# tests (10.200/15 for sonm-rendezvous's NAT tests, 10.212/16 for sonm-e2e's).
NAT_ROUTER=sonm-nat-router
NAT_WORKER=sonm-nat-worker
NAT_HOST_IF=sonm-nat0
NAT_HOST_IP=10.213.0.1
NAT_ROUTER_IP=10.213.0.2
NAT_WORKER_IP=10.213.1.2
[[ "$NAT" =~ ^(port-restricted|symmetric|none)$ ]] ||
  { echo "SONM_NAT=$NAT: expected port-restricted, symmetric or none" >&2; exit 2; }
DWH="http://$DWH_LISTEN"
export SONM_NODE="http://$NODE_LISTEN"
STATE="$ROOT/.local/network"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
ANVIL="$ROOT/contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
# anvil's well-known dev keys (accounts 0, 1, 2): for this local chain only.
DEPLOYER_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
SUPPLIER_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
SUPPLIER=0x70997970C51812dc3A010C7d01b50e0d17dc79C8
CONSUMER_KEY=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a
CONSUMER=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
ms() { date +%s%3N; }
since() { echo "$(($(ms) - $1)) ms"; }
sonm() { "$BIN/sonm" "$@"; }
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 300); do port_taken "$1" && return 0; sleep 0.1; done; return 1; }
# GET from the DWH's query API (node's fetch: curl is not among the installed packages).
dwh() {
  node -e 'fetch(process.argv[1]).then(async r => { const t = await r.text();
    if (!r.ok) { console.error(`HTTP ${r.status}: ${t}`); process.exit(1); }
    process.stdout.write(t); }).catch(e => { console.error(String(e)); process.exit(1); });' "$DWH$1"
}

# Whether the worker can go behind a simulated NAT here; says why not when it cannot.
nat_unavailable() {
  [[ "$NAT" == none ]] && { echo "SONM_NAT=none"; return 0; }
  ((EUID == 0)) || { echo "not running as root"; return 0; }
  command -v iptables >/dev/null || { echo "iptables is not installed"; return 0; }
  ip netns add "sonm-nat-probe$$" 2>/dev/null || { echo "network namespaces cannot be made here"; return 0; }
  ip netns del "sonm-nat-probe$$"
  return 1
}
nat_down() {
  # Deleting the namespaces takes their veth pairs (and the route through them) and the
  # router's iptables rules with them.
  ip netns del "$NAT_WORKER" 2>/dev/null || true
  ip netns del "$NAT_ROUTER" 2>/dev/null || true
}
nat_up() {
  local ns
  for ns in "$NAT_ROUTER" "$NAT_WORKER"; do
    if [[ -e "/run/netns/$ns" ]]; then
      # Left over from a run that was killed -9: remove it unless something still runs there.
      [[ -z "$(ip netns pids "$ns")" ]] ||
        { echo "namespace $ns is in use (a network already running?)" >&2; exit 1; }
      ip netns del "$ns"
    fi
  done
  NAT_CREATED=1   # from here on, cleanup deletes what was made
  ip netns add "$NAT_ROUTER"
  ip netns add "$NAT_WORKER"
  ip -n "$NAT_ROUTER" link set lo up
  ip -n "$NAT_WORKER" link set lo up
  ip link add "$NAT_HOST_IF" type veth peer name wan netns "$NAT_ROUTER"
  ip addr add "$NAT_HOST_IP/24" dev "$NAT_HOST_IF"
  ip link set "$NAT_HOST_IF" up
  ip -n "$NAT_ROUTER" addr add "$NAT_ROUTER_IP/24" dev wan
  ip -n "$NAT_ROUTER" link set wan up
  ip -n "$NAT_ROUTER" link add lan type veth peer name eth0 netns "$NAT_WORKER"
  ip -n "$NAT_ROUTER" addr add 10.213.1.1/24 dev lan
  ip -n "$NAT_ROUTER" link set lan up
  ip -n "$NAT_WORKER" addr add "$NAT_WORKER_IP/24" dev eth0
  ip -n "$NAT_WORKER" link set eth0 up
  ip -n "$NAT_WORKER" route add default via 10.213.1.1
  # The worker's private address is routed to its router (not out of this machine), which
  # drops what the worker did not ask for, as a home router does.
  ip route add 10.213.1.0/24 via "$NAT_ROUTER_IP" dev "$NAT_HOST_IF"
  ip netns exec "$NAT_ROUTER" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$NAT_ROUTER" iptables -A INPUT -i wan -p udp -j DROP
  ip netns exec "$NAT_ROUTER" iptables -A FORWARD -i wan -m conntrack --ctstate NEW -j DROP
  if [[ "$NAT" == symmetric ]]; then
    # A fresh port per destination: the mapping the server sees is not the one the node
    # would punch towards.
    ip netns exec "$NAT_ROUTER" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random
  else
    # Ports kept, replies only from where the worker sent: what most home routers do.
    ip netns exec "$NAT_ROUTER" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
  fi
}

say "Preparing (installs what is missing and builds; the first run takes several minutes)"
scripts/install-deps.sh
wasm-runtime/jobs/build.sh >/dev/null
cargo build --quiet --bin sonm-deploy --bin sonm-dwh --bin sonm-worker --bin sonm-node --bin sonm \
  --bin sonm-rendezvous
for p in "$PORT" "${NODE_LISTEN#*:}" "${DWH_LISTEN#*:}"; do
  if port_taken "$p"; then echo "port $p is taken (a network already running?)" >&2; exit 1; fi
done
rm -rf "$STATE" && mkdir -p "$STATE"
PIDS=()
NAT_CREATED=0
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ((NAT_CREATED)) && nat_down
  return 0
}
trap cleanup EXIT
trap 'echo; echo "stopping the network"; exit 0' INT TERM
if WHY_NO_NAT=$(nat_unavailable); then
  NAT=none
  HOST_IP=127.0.0.1
else
  nat_up
  HOST_IP=$NAT_HOST_IP   # where the worker reaches the chain and the rendezvous
fi
RV_LISTEN=$HOST_IP:$RV_PORT

say "1. A local chain with the SONM contracts"
# Behind the NAT the worker reaches the chain at the host's end of the veth pair.
ANVIL_HOSTS=(--host 127.0.0.1)
[[ "$NAT" == none ]] || ANVIL_HOSTS+=(--host "$HOST_IP")
"$ANVIL" "${ANVIL_HOSTS[@]}" --port "$PORT" --block-time 1 --silent >"$STATE/anvil.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT"
t=$(ms)
SONM_DEPLOY_KEY=$DEPLOYER_KEY "$BIN/sonm-deploy" --rpc-url "$RPC" --out "$STATE/addresses.toml" \
  --fund "$SUPPLIER" --fund "$CONSUMER" --fund-snm 1000 >"$STATE/deploy.log"
echo "anvil on $RPC (chain 31337, 1 s blocks); contracts deployed and wired in $(since "$t")"
echo "    addresses: $STATE/addresses.toml"
# The DWH follows the chain from the deploy block. Behind the NAT the worker publishes its
# signed asks to it from its namespace, through $HOST_IP: then it listens on every interface.
DWH_BIND=$DWH_LISTEN
WORKER_DWH=$DWH
[[ "$HOST_IP" == 127.0.0.1 ]] || { DWH_BIND=0.0.0.0:${DWH_LISTEN#*:}; WORKER_DWH="http://$HOST_IP:${DWH_LISTEN#*:}"; }
# confirmations = 0: anvil seals every block
# itself, so this chain never reorganises (and the follower would undo a reorg anyway); any
# lag would only delay the search by a block. On a public chain keep the default of 12.
cat >"$STATE/dwh.toml" <<TOML
endpoints = ["$RPC"]
addresses = "$STATE/addresses.toml"
listen = "$DWH_BIND"
data_dir = "$STATE/dwh"
confirmations = 0
poll_interval_ms = 250
map_size_mib = 1024
TOML
t=$(ms)
"$BIN/sonm-dwh" --config "$STATE/dwh.toml" 2>"$STATE/dwh.log" &
PIDS+=($!)
INDEXED=""
for _ in $(seq 150); do
  INDEXED=$(dwh /v1/status 2>/dev/null | jq -r '.number // empty') && [[ -n "$INDEXED" ]] && break
  sleep 0.2
done
[[ -n "$INDEXED" ]] || { echo "sonm-dwh did not index the chain; see $STATE/dwh.log" >&2; exit 1; }
echo "sonm-dwh indexing the chain into $STATE/dwh (LMDB), API on $DWH: block $INDEXED indexed after $(since "$t")"

say "2. sonm-rendezvous, and the supplier's sonm-worker selling a slice of this box"
# The rendezvous server: workers publish themselves there, nodes find them and are introduced
# (hole punching), or relayed. Its key is created at first start; clients pin its address.
cat >"$STATE/rendezvous.toml" <<TOML
listen = "$RV_LISTEN"
relay_ip = "$HOST_IP"
key_file = "$STATE/rendezvous.key"
TOML
t=$(ms)
"$BIN/sonm-rendezvous" --config "$STATE/rendezvous.toml" >"$STATE/rendezvous.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "serving" "$STATE/rendezvous.log" 2>/dev/null && break; sleep 0.1; done
RV_ADDRESS=$(grep -m1 "serving" "$STATE/rendezvous.log" | grep -oE 'address=0x[0-9a-fA-F]{40}' | cut -d= -f2 || true)
[[ -n "$RV_ADDRESS" ]] || { echo "sonm-rendezvous did not start:" >&2; cat "$STATE/rendezvous.log" >&2; exit 1; }
echo "sonm-rendezvous $RV_ADDRESS on $RV_LISTEN (QUIC, relay on $HOST_IP) after $(since "$t")"
if [[ "$NAT" == none ]]; then
  WORKER_RPC=$RPC
  echo "no simulated NAT ($WHY_NO_NAT): the worker runs on 127.0.0.1 like everything else"
else
  # The worker's own namespace: its listen address is private, its traffic leaves through
  # the router's NAT, and nothing reaches it unless it sent there first.
  WORKER_LISTEN=$NAT_WORKER_IP:${SONM_WORKER_PORT:-15010}
  WORKER_RPC="http://$HOST_IP:$PORT"
  echo "the worker's box: network namespace $NAT_WORKER at $NAT_WORKER_IP, behind a $NAT NAT" \
    "(router namespace $NAT_ROUTER, masquerading as $NAT_ROUTER_IP); no route from here to it"
fi
echo "$SUPPLIER_KEY" >"$STATE/worker.key"
cat >"$STATE/worker.toml" <<TOML
state_dir = "$STATE/worker"
key_file = "$STATE/worker.key"
rpc_url = "$WORKER_RPC"
addresses = "$STATE/addresses.toml"
listen = "$WORKER_LISTEN"
netflags = "outbound"
poll_interval_ms = 500
rendezvous = "$RV_LISTEN"            # publishes itself there, from the task service's socket
rendezvous_address = "$RV_ADDRESS"   # the server's identity, pinned
dwh_url = "$WORKER_DWH"             # where its signed asks are published

[market]
asks = "signed"            # signed off chain, published to the DWH: no gas to offer or re-price

[benchmarks]
wasm_score_module = "$ROOT/wasm-runtime/jobs/build/wasm-score.wasm"

[[plans]]
name = "one-core"
cpu_cores = 1
ram = "256MiB"
storage = "1GB"
price = 1000000000000      # SNM wei per second (0.0036 SNM an hour)
duration = 0               # spot
netflags = "outbound"
TOML
t=$(ms)
WORKER_CMD=("$BIN/sonm-worker" --config "$STATE/worker.toml" run)
# `ip netns exec` execs the worker, so the PID is the worker's.
[[ "$NAT" == none ]] || WORKER_CMD=(ip netns exec "$NAT_WORKER" "${WORKER_CMD[@]}")
"${WORKER_CMD[@]}" 2>"$STATE/worker.log" &
PIDS+=($!)
# The task service is QUIC (UDP): wait for the worker to say it is serving.
for _ in $(seq 300); do grep -q "worker running" "$STATE/worker.log" 2>/dev/null && break; sleep 0.1; done
grep -q "worker running" "$STATE/worker.log" || { cat "$STATE/worker.log" >&2; exit 1; }
echo "worker $SUPPLIER serving tasks on $WORKER_LISTEN (QUIC) after $(since "$t") (benchmarks measured at first start)"
for _ in $(seq 100); do grep -q "published to the rendezvous" "$STATE/worker.log" 2>/dev/null && break; sleep 0.1; done
grep -q "published to the rendezvous" "$STATE/worker.log" ||
  { echo "the worker did not publish itself to the rendezvous; see $STATE/worker.log" >&2; exit 1; }
echo "worker published to the rendezvous (as the server sees it: $(grep -m1 "published to the rendezvous" "$STATE/worker.log" | grep -oE 'observed=[^ ]+' | cut -d= -f2))"

say "3. The customer's sonm-node"
echo "$CONSUMER_KEY" >"$STATE/consumer.key"
echo "local-network password" >"$STATE/node.password"
"$BIN/sonm-node" keygen --keystore "$STATE/node-key.json" --password-file "$STATE/node.password" \
  --import-hex-file "$STATE/consumer.key" >/dev/null
rm "$STATE/consumer.key"
cat >"$STATE/node.toml" <<TOML
keystore = "$STATE/node-key.json"
password_file = "$STATE/node.password"
rpc_url = "$RPC"
addresses = "$STATE/addresses.toml"
listen = "$NODE_LISTEN"
dwh_url = "$DWH"             # market search through the DWH (without it: the chain's logs)
# No [workers] map: workers are found and reached through the rendezvous.
rendezvous = "$RV_LISTEN"
rendezvous_address = "$RV_ADDRESS"
TOML
# Behind the NAT: the node's QUIC socket on the side of this box that the worker reaches.
[[ "$NAT" == none ]] || echo "quic_bind = \"$HOST_IP:0\"" >>"$STATE/node.toml"
"$BIN/sonm-node" --config "$STATE/node.toml" 2>"$STATE/node.log" &
PIDS+=($!)
wait_port "${NODE_LISTEN#*:}" || { cat "$STATE/node.log" >&2; exit 1; }
echo "node API on $SONM_NODE (keystore $STATE/node-key.json), searching the market through $DWH"
sonm balance
SUPPLIER_SNM_BEFORE=$(node -e '
  fetch(process.argv[1], {method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({jsonrpc: "2.0", id: 1, method: "eth_call", params: [{to: process.argv[2],
      data: "0x70a08231" + process.argv[3].slice(2).toLowerCase().padStart(64, "0")}, "latest"]})})
    .then(r => r.json()).then(j => console.log(BigInt(j.result).toString()));' \
  "$RPC" "$(grep -E '^snm *=' "$STATE/addresses.toml" | sed -E 's/.*"(0x[0-9a-fA-F]+)".*/\1/')" "$SUPPLIER")

say "4. The customer finds the worker's ask and buys it"
WANT="cpu-cores=1 ram-size=128MiB"
t=$(ms)
ASK=""
for _ in $(seq 120); do
  # A signed ask is bought by its digest, a placed one by its id.
  ASK=$(sonm --json market asks --benchmarks "$WANT" --max-price 2000000000000 |
    jq -r '.orders[0] | (.digest // .id) // empty')
  [[ -n "$ASK" ]] && break
  sleep 0.5
done
[[ -n "$ASK" ]] || { echo "the worker's ask did not appear; see $STATE/worker.log" >&2; exit 1; }
echo "asks matching \"$WANT\" at most 2e12 wei/s (found after $(since "$t")):"
sonm market asks --benchmarks "$WANT" --max-price 2000000000000 | sed 's/^/    /'
echo "the DWH's signed-order book (GET $DWH/v1/signed-orders?type=ask): $(dwh '/v1/signed-orders?type=ask' | jq '.items | length') live signed ask(s);" \
  "on chain (GET $DWH/v1/orders?type=ask): $(dwh '/v1/orders?type=ask' | jq '.items | length') placed"
echo "market stats, placed and signed (GET $DWH/v1/stats?type=ask): $(dwh '/v1/stats?type=ask' |
  jq -r '"\(.orders) open ask(s), median price \(.price.p50 // "-") wei/s; classes: " +
    ([.classes[] | "\(.class.cores.min)-\(.class.cores.max) cores/\(.class.gpus.min)-\(.class.gpus.max) GPUs: \(.orders)"] | join(", "))')"
t=$(ms)
DEAL=$(sonm --json deal buy "$ASK" --duration 0 | jq -r .id)
echo "bought ask $ASK: deal $DEAL opened in $(since "$t")"
sonm deal show "$DEAL" | sed 's/^/    /'

say "5. The customer's WASM job on the worker: sha256 of every input file"
mkdir -p "$STATE/job/in/photos"
for i in 1 2 3; do head -c $((i * 1000000)) /dev/urandom >"$STATE/job/in/part-$i.bin"; done
head -c 250000 /dev/urandom >"$STATE/job/in/photos/cat.jpg"
echo "hello from the customer" >"$STATE/job/in/note.txt"
cat >"$STATE/job/job.toml" <<TOML
input_dir = "in"

[module]
path = "$ROOT/wasm-runtime/jobs/build/sha256.wasm"

[limits]
memory_bytes = 67108864
wall_time_ms = 30000
TOML
t=$(ms)
TASK=$(sonm --json task start "$DEAL" "$STATE/job/job.toml" | jq -r .task)
sonm task result "$DEAL" "$TASK" --wait 60 --out "$STATE/job/out" | sed 's/^/    /'
echo "uploaded, ran and fetched (receipt verified by the node) in $(since "$t")"
REACHED=$(grep -m1 "reached the worker through the rendezvous" "$STATE/node.log" || true)
[[ -n "$REACHED" ]] ||
  { echo "the node did not reach the worker through the rendezvous; see $STATE/node.log" >&2; exit 1; }
VIA=$(grep -oE 'addr=[^ ]+' <<<"$REACHED" | cut -d= -f2)
case "$REACHED" in
  *"(relay)"*) HOW="relayed by sonm-rendezvous at $VIA (no direct path opened in time)" ;;
  *) if [[ "$NAT" == none ]]; then
       HOW="direct to $VIA (on loopback: no NAT to punch through)"
     elif [[ "${VIA%:*}" == "$NAT_ROUTER_IP" ]]; then
       HOW="direct, hole-punched through the worker's NAT at $VIA"
     else
       HOW="direct to $VIA"
     fi ;;
esac
echo "the node reached the worker through the rendezvous: $HOW"
(cd "$STATE/job/in" && find . -type f | sed 's|^\./||' | sort | xargs sha256sum) >"$STATE/job/expected"
sort -k2 "$STATE/job/out/SHA256SUMS" >"$STATE/job/got"
if diff -q <(sort -k2 "$STATE/job/expected") "$STATE/job/got" >/dev/null; then
  echo "out/SHA256SUMS matches sha256sum for all $(wc -l <"$STATE/job/got") files"
else
  echo "out/SHA256SUMS differs from sha256sum:" >&2
  diff <(sort -k2 "$STATE/job/expected") "$STATE/job/got" >&2 || true
  exit 1
fi

say "6. The customer closes the deal; the supplier is paid for the seconds it ran"
t=$(ms)
sonm deal close "$DEAL" | sed 's/^/    /'
echo "closed in $(since "$t")"
sonm balance | sed 's/^/    customer: /'
EARNED=$(node -e '
  fetch(process.argv[1], {method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({jsonrpc: "2.0", id: 1, method: "eth_call", params: [{to: process.argv[2],
      data: "0x70a08231" + process.argv[3].slice(2).toLowerCase().padStart(64, "0")}, "latest"]})})
    .then(r => r.json()).then(j =>
      console.log((BigInt(j.result) - BigInt(process.argv[4])).toString()));' \
  "$RPC" "$(grep -E '^snm *=' "$STATE/addresses.toml" | sed -E 's/.*"(0x[0-9a-fA-F]+)".*/\1/')" \
  "$SUPPLIER" "$SUPPLIER_SNM_BEFORE")
echo "    supplier: earned $EARNED SNM wei"
# The DWH's view of the same deal, once it has indexed the close.
DEAL_ROW=""
for _ in $(seq 50); do
  DEAL_ROW=$(dwh "/v1/deals/$DEAL" 2>/dev/null || true)
  [[ "$(jq -r '.deal.status // empty' <<<"$DEAL_ROW")" == closed ]] && break
  sleep 0.2
done
[[ "$(jq -r '.deal.status // empty' <<<"$DEAL_ROW")" == closed ]] ||
  { echo "the DWH did not index the close of deal $DEAL; see $STATE/dwh.log" >&2; exit 1; }
# Amounts are u128: read them as text (jq would round them through a double).
num() { grep -oE "\"$1\":[0-9]+" <<<"$DEAL_ROW" | head -1 | cut -d: -f2; }
PAYOUT=$(num total_payout)
echo "the deal as the DWH indexed it (GET $DWH/v1/deals/$DEAL):"
echo "    deal $DEAL: $(jq -r .deal.status <<<"$DEAL_ROW"), ask $(jq -r '.deal.ask | if . == 0 or . == null then "signed" else . end' <<<"$DEAL_ROW"), $(num price) wei/s," \
  "$(jq -r .bills <<<"$DEAL_ROW") bill(s), paid out $PAYOUT SNM wei, refunded $(num refunded) SNM wei"
[[ "$PAYOUT" == "$EARNED" ]] ||
  { echo "the DWH's payout ($PAYOUT) differs from the supplier's balance change ($EARNED)" >&2; exit 1; }
echo "    (its payout equals the supplier's SNM balance change on chain)"
echo "    the supplier's deals in the DWH: $(dwh "/v1/deals?party=$SUPPLIER&role=supplier" | jq '.items | length')"

say "Not there yet"
cat <<TXT
    - the node takes the DWH's orders but still reads the match context (identity levels,
      masters, blacklists) from the chain
    - one simulated NAT in front of the worker, none in front of the customer (both behind
      NATs is covered by sonm-rendezvous's NAT tests); without root, no NAT at all
    - a worker listening on 0.0.0.0 publishes only the address the server observes, not its
      LAN addresses
TXT

if ((ONCE)) || [[ ! -t 0 ]]; then
  exit 0
fi
say "The network stays up; Ctrl-C stops it. Try:"
cat <<TXT
    export SONM_NODE=$SONM_NODE PATH=$BIN:\$PATH
    sonm balance
    sonm market asks --benchmarks "cpu-cores=1" --max-price 2000000000000
    sonm deal buy <ASK> --duration 0 && sonm task start <DEAL> $STATE/job/job.toml
    curl "$DWH/v1/orders?type=ask"   # the DWH's query API, if curl is installed ($DWH/openapi.json)
    logs: $STATE/{anvil,dwh,rendezvous,worker,node}.log
TXT
[[ "$NAT" == none ]] ||
  echo "    the worker's box: ip netns exec $NAT_WORKER ip addr   (removed with the network)"
wait "${PIDS[0]}"
