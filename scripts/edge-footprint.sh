#!/usr/bin/env bash
# The worker's edge footprint (issue 7, item 8), as a benchmark that prints a table:
#   - the stripped size of sonm-worker built with the `edge` profile (the release profile with
#     opt-level "s", fat LTO, panic=abort, one codegen unit, stripped);
#   - its RSS when idle: started against a local anvil with one plan, its ask placed, then
#     left alone for SONM_FOOTPRINT_IDLE_S seconds (default 10); measured on a restart, as a
#     small box runs it (the first start also measures the benchmarks: its peak is reported);
#   - baseline, built the same way in the same run: sonm-wasm-run (the WASM runtime alone:
#     wasmtime, WASI and our sandbox) running the C `hello` job: size and peak RSS.
#
#   scripts/edge-footprint.sh        # builds (minutes: fat LTO over wasmtime and alloy), measures
#
# Needs what scripts/test.sh installs (anvil, the example jobs). CARGO_TARGET_DIR is respected.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
IDLE_S=${SONM_FOOTPRINT_IDLE_S:-10}
ANVIL=$ROOT/contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
[ -x "$ANVIL" ] || { echo "no anvil: contracts/scripts/install-tools.sh" >&2; exit 1; }
[ -f wasm-runtime/jobs/build/hello.wasm ] || wasm-runtime/jobs/build.sh >/dev/null

cargo build --locked --quiet --profile edge -p sonm-worker --bin sonm-worker \
  -p sonm-wasm-runtime --bin sonm-wasm-run
# The deploy tool in any build (SONM_DEPLOY), else the dev one.
DEPLOY=${SONM_DEPLOY:-$TARGET/debug/sonm-deploy}
[ -x "$DEPLOY" ] || { cargo build --locked --quiet -p sonm-contracts --bin sonm-deploy; DEPLOY=$TARGET/debug/sonm-deploy; }
EDGE=$TARGET/edge
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$2/status"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# A chain with the contracts, and the worker configured as scripts/local-network.sh does.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$ANVIL" --port "$port" --block-time 1 --silent >"$work/anvil.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
# anvil's well-known dev keys (deployer, supplier): for this local chain only.
SONM_DEPLOY_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 \
  "$DEPLOY" --rpc-url "http://127.0.0.1:$port" --out "$work/addresses.toml" \
  --fund 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 >"$work/deploy.log" 2>&1 ||
  { cat "$work/deploy.log" >&2; exit 1; }
echo 0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d >"$work/worker.key"
cat >"$work/worker.toml" <<TOML
state_dir = "$work/state"
key_file = "$work/worker.key"
rpc_url = "http://127.0.0.1:$port"
addresses = "$work/addresses.toml"
listen = "127.0.0.1:0"
netflags = "outbound"

[benchmarks]
wasm_score_module = "$ROOT/wasm-runtime/jobs/build/wasm-score.wasm"

[[plans]]
name = "one-core"
cpu_cores = 1
ram = "256MiB"
storage = "1GB"
price = 1000000000000
duration = 0
netflags = "outbound"
TOML

# Runs the worker until its log says `$2` (the first start: its ask placed; a restart: serving,
# the ask already on chain), lets it idle, and sets RSS_KIB and HWM_KIB.
run_worker() {
  local log=$work/worker-$1.log
  "$EDGE/sonm-worker" --config "$work/worker.toml" run 2>"$log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do grep -q "$2" "$log" && break; sleep 0.1; done
  grep -q "$2" "$log" || { cat "$log" >&2; echo "the worker never logged '$2'" >&2; exit 1; }
  sleep "$IDLE_S"
  RSS_KIB=$(kib VmRSS "$pid")
  HWM_KIB=$(kib VmHWM "$pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}
run_worker first "ask placed"
first_hwm=$HWM_KIB
run_worker restart "worker running"
idle_rss=$RSS_KIB
idle_hwm=$HWM_KIB

# Baseline: the runtime alone on the hello job (peak RSS of the child).
base_hwm=$(python3 - "$EDGE/sonm-wasm-run" "$ROOT/wasm-runtime/jobs/hello/job.toml" <<'PY'
import resource, subprocess, sys
subprocess.run([sys.argv[1], sys.argv[2]], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)

worker_size=$(stat -c %s "$EDGE/sonm-worker")
base_size=$(stat -c %s "$EDGE/sonm-wasm-run")
echo
echo "edge profile (opt-level s, fat LTO, panic=abort, 1 codegen unit, stripped), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo
printf '| %-44s | %12s | %s |\n' "" "MiB" "goal"
printf '|%s|%s|%s|\n' "----------------------------------------------" "-------------:" "------"
printf '| %-44s | %12s | %s |\n' "sonm-worker, stripped" "$(mib "$worker_size")" "≤ 20 MB"
printf '| %-44s | %12s | %s |\n' "sonm-worker idle RSS (restart, ${IDLE_S} s idle)" "$(mib $((idle_rss * 1024)))" "≤ 15 MB"
printf '| %-44s | %12s | %s |\n' "sonm-worker peak RSS on that restart" "$(mib $((idle_hwm * 1024)))" ""
printf '| %-44s | %12s | %s |\n' "sonm-worker peak RSS, first start (benchmarks)" "$(mib $((first_hwm * 1024)))" ""
printf '| %-44s | %12s | %s |\n' "baseline: sonm-wasm-run, stripped" "$(mib "$base_size")" ""
printf '| %-44s | %12s | %s |\n' "baseline: sonm-wasm-run hello, peak RSS" "$(mib $((base_hwm * 1024)))" ""
echo
awk -v w="$worker_size" -v b="$base_size" 'BEGIN { printf "worker / runtime-only size: %.2fx\n", w / b }'
