#!/usr/bin/env bash
# Every check and test of the project, from a fresh Debian machine: installs what
# the tests need (idempotent), then formatting, lints, the contracts' forge tests
# and the whole Rust test suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A one-off build (CI, a fresh clone) gains nothing from incremental compilation and its
# caches take tens of GB with this workspace's tests; nor from line tables, which are a third
# of every 60-80 MB test binary (a panic still names its file and line without them). A CI run
# once ran its disk full at the link step.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false CARGO_PROFILE_TEST_DEBUG=false
fi

step "toolchain"
if ! command -v cargo >/dev/null; then
  echo "test.sh: cargo not found. Install Rust >= 1.95 with rustup (Debian's rustc is too old)." >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
scripts/install-deps.sh
# As root, with runc, busybox, iproute2 and nftables just installed, the container tests must
# run: a skip there would hide a start-up bug.
if [ "$(id -u)" -eq 0 ]; then export SONM_REQUIRE_CONTAINERS=1; fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "contracts: forge tests and artifact freshness"
contracts/scripts/test.sh

step "example WASM jobs"
wasm-runtime/jobs/build.sh

step "binaries"
# End-to-end tests start other packages' binaries (the node's flow test drives `sonm`), and
# `cargo test` builds a package's binaries only for that package's own tests: build them all.
cargo build --workspace --bins --locked

step "packaging: systemd units and .debs (built from the debug binaries above)"
packaging/test.sh

step "packaging: the packages under a real systemd (PID 1 of its own namespaces)"
packaging/systemd-test.sh

step "cargo test (workspace)"
cargo test --workspace --locked
