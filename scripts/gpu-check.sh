#!/usr/bin/env bash
# The worker's GPU code on real NVIDIA hardware, for a session lent a GPU machine (`device`):
# the NVML inventory the worker reports, and a container on a GPU slice opening the host's GPU.
#
#   scripts/gpu-check.sh stage   # here: builds and stages what the device machine needs into
#                                # target/gpu-check/ (about 50 MB; pass that path as `carry`)
#   scripts/gpu-check.sh run     # there (as root): prints the check's output
#
# The device machine has no network and may lack the Rust toolchain, runc and busybox, so the
# binaries travel: the worker (edge profile, stripped), the containers test binary (stripped),
# runc and busybox-static from this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=target/gpu-check

case "${1:-}" in
stage)
  mkdir -p "$stage"
  cargo build --profile edge -p sonm-worker --bin sonm-worker
  cp target/edge/sonm-worker "$stage/sonm-worker"
  # The test binary's path, from cargo's JSON messages.
  bin=$(cargo test --release -p sonm-worker --test integration --no-run --message-format=json |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "integration"
      and .executable != null) | .executable' | tail -n1)
  cp "$bin" "$stage/worker-tests"
  strip "$stage/worker-tests" "$stage/sonm-worker"
  cp "$(command -v runc)" "$stage/runc"
  cp /bin/busybox "$stage/busybox"
  du -sh "$stage"
  echo "staged: run \`scripts/gpu-check.sh run\` on the device with carry [\"$stage\"]"
  ;;
run)
  [ -d "$stage" ] || { echo "gpu-check: $stage missing: run \`$0 stage\` first and carry it" >&2; exit 2; }
  echo "== nvidia-smi"
  nvidia-smi -L || echo "(no nvidia-smi)"
  echo "== the worker's inventory (NVML through nvml-wrapper, loaded at run time)"
  work=$(mktemp -d)
  cat >"$work/worker.toml" <<EOF
state_dir = "$work/state"
key_file = "$work/key"
rpc_url = "http://127.0.0.1:1"
addresses = "$work/addresses.toml"
EOF
  "$stage/sonm-worker" --config "$work/worker.toml" inventory
  echo "== a container on a GPU slice (real runc, the host's /dev/nvidia*)"
  # The test builds its rootfs from /bin/busybox and finds runc on PATH.
  [ -x /bin/busybox ] || cp "$stage/busybox" /bin/busybox
  export PATH="$PWD/$stage:$PATH"
  cd "$work"
  status=0
  SONM_REQUIRE_CONTAINERS=1 "$OLDPWD/$stage/worker-tests" --ignored --exact --nocapture \
    containers::a_real_gpu_opens_inside_a_gpu_container || status=1
  # The stand-in check too: the same path with mknod nodes, for comparison.
  SONM_REQUIRE_CONTAINERS=1 "$OLDPWD/$stage/worker-tests" --exact \
    containers::a_gpu_slice_s_device_nodes_are_passed_through_and_usable || status=1
  exit "$status"
  ;;
*)
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
