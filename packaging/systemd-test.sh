#!/usr/bin/env bash
# The packages under a real systemd (scripts/test.sh runs it after packaging/test.sh, as root).
#
# systemd 252 boots as PID 1 of fresh PID, mount, cgroup, network, UTS and IPC namespaces, over a
# throwaway overlay of this machine's root (the upper layer is a tmpfs that dies with the mount
# namespace: nothing on the host changes). Inside it, as a supplier and an operator would:
#   1. `dpkg -i` the six packages (real maintainer scripts, real adduser, real dpkg database);
#   2. a chain in the namespace's network (anvil, contracts deployed), keys and addresses put
#      where the default configurations expect them, the RPC port edited in;
#   3. `systemctl enable --now` each daemon: Type=notify, so this returns only after READY=1,
#      with every sandboxing directive of the units enforced for real (user, ProtectSystem,
#      SystemCallFilter, MemoryDenyWriteExecute, PrivateUsers, ...);
#   4. the customer flow through the systemd-run daemons with the installed `sonm` CLI: find the
#      worker's ask, buy it, run the sha256 WASM job, check the result, close the deal;
#   5. logs in the journal; `kill -9` of a daemon restarts it (Restart=on-failure); exposure as
#      `systemd-analyze security` reports it for the running units;
#   6. an upgrade (`dpkg -i` again) with the services running restarts them and keeps an edited
#      config and the enablement; `systemctl stop` is clean; `dpkg --purge` of a running daemon
#      stops it and removes its config, state and enablement link, nothing else.
#
# Needs root, unshare, overlayfs and /lib/systemd/systemd; otherwise it says why and skips.
# The .debs are built from target/debug (packaging/build-debs.sh --no-build), like packaging/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT_DIR/$TARGET ;; esac

step() { printf '\n--> systemd: %s\n' "$*"; }
fail() {
  echo "packaging/systemd-test.sh: FAIL: $*" >&2
  if [ -n "${PID1:-}" ] && [ -d "/proc/$PID1" ]; then
    echo "--- systemctl --failed, and the journal's last lines:" >&2
    inside systemctl --no-pager --failed >&2 || true
    inside journalctl --no-pager -n 60 -o short-monotonic >&2 || true
  fi
  exit 1
}
skip() {
  echo "packaging/systemd-test.sh: SKIPPED: $*"
  exit 0
}

[ "$(id -u)" = 0 ] || skip "needs root (to make namespaces and boot systemd in them)"
[ -x /lib/systemd/systemd ] || skip "no /lib/systemd/systemd (apt-get install systemd)"
command -v unshare >/dev/null && command -v nsenter >/dev/null || skip "no unshare/nsenter (util-linux)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip "no overlayfs in this kernel"
for b in sonm-worker sonm-node sonm-dwh sonm-rendezvous sonm sonm-deploy; do
  [ -x "$TARGET/debug/$b" ] || fail "$TARGET/debug/$b is missing: cargo build --workspace --bins first"
done
ANVIL=contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
[ -x "$ANVIL" ] || fail "no anvil: contracts/scripts/install-tools.sh"
ANVIL=$ROOT_DIR/$ANVIL
JOB=$ROOT_DIR/wasm-runtime/jobs/build/sha256.wasm
[ -f "$JOB" ] || fail "no $JOB: wasm-runtime/jobs/build.sh"

work=$(mktemp -d)
PID1=
cleanup() {
  # Killing PID 1 of the namespace kills everything in it; the overlay goes with the mount
  # namespace. anvil is a host process in the namespace's network only: killed by itself.
  if [ -n "${anvil_pid:-}" ]; then kill "$anvil_pid" 2>/dev/null || true; fi
  if [ -n "$PID1" ]; then kill -9 "$PID1" 2>/dev/null || true; fi
  [ -z "${unshare_pid:-}" ] || wait "$unshare_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Runs a command inside every namespace of the booted system (its root, its users, its network).
inside() { nsenter -t "$PID1" -a -- "$@"; }
# Runs a host binary in the booted system's network only (anvil, sonm-deploy, this repo's files).
in_net() { nsenter -t "$PID1" --net -- "$@"; }
# One property of a unit (`systemctl show` prints several in its own order, not the asked one).
prop() { inside systemctl show "$1" -p "$2" --value; }

step "build the .debs from target/debug"
packaging/build-debs.sh --profile debug --no-build --out "$work/debs" >"$work/debs.list"
mapfile -t debs <"$work/debs.list"
[ ${#debs[@]} = 6 ] || fail "expected 6 packages, got ${#debs[@]}"

step "boot systemd as PID 1 of new namespaces over a throwaway overlay of /"
cat >"$work/boot.sh" <<'BOOT'
#!/bin/bash
# Runs as PID 1's parent-to-be inside the new namespaces (unshare --fork): builds the root
# and execs systemd in it.
set -euo pipefail
W=$1
mkdir -p "$W/layers" "$W/root"
mount -t tmpfs -o mode=0755 tmpfs "$W/layers"
mkdir -p "$W/layers/upper" "$W/layers/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$W/layers/upper,workdir=$W/layers/work" "$W/root"
R=$W/root
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
# A cgroup2 hierarchy of its own (the cgroup namespace makes this process's cgroup its root).
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
hostname sonm-systemd-test
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
exec env -i container=sonm-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=basic.target --log-target=journal </dev/null
BOOT
chmod +x "$work/boot.sh"
unshare --pid --fork --mount --cgroup --net --uts --ipc --propagation private \
  "$work/boot.sh" "$work" >"$work/boot.log" 2>&1 &
unshare_pid=$!
# PID 1 of the namespace is the unshare process's child (systemd, once boot.sh execs it).
for _ in $(seq 100); do
  PID1=$(pgrep -P "$unshare_pid" || true)
  [ -n "$PID1" ] && [ "$(cat "/proc/$PID1/comm" 2>/dev/null)" = systemd ] && break
  PID1=
  sleep 0.1
done
[ -n "$PID1" ] || { cat "$work/boot.log"; fail "systemd did not start"; }
state=
for _ in $(seq 300); do
  state=$(inside systemctl is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) break ;; esac
  sleep 0.1
done
case "$state" in
  running) ;;
  degraded) inside systemctl --no-pager --failed || true ;; # the host's own units, not ours
  *) cat "$work/boot.log"; fail "the system did not come up (is-system-running: ${state:-none})" ;;
esac
echo "systemd $(inside systemctl --version | awk 'NR == 1 { print $2 }') is PID 1 (host pid $PID1): $state"

step "dpkg -i the packages"
# A Docker-style /usr/sbin/policy-rc.d (exit 101: "no service actions") is in this machine's
# image; a real Debian system has none, and with it the maintainer scripts' try-restart/stop
# would be refused, so the booted system drops it (its overlay, not the host's file).
inside rm -f /usr/sbin/policy-rc.d
mkdir -p "/proc/$PID1/root/tmp/debs"
cp "${debs[@]}" "/proc/$PID1/root/tmp/debs/"
inside sh -c 'dpkg -i /tmp/debs/*.deb' >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
inside dpkg-query -W -f '${Package} ${Version} ${Status}\n' 'sonm*'
for d in worker node dwh rendezvous keeper; do
  st=$(inside systemctl is-enabled "sonm-$d" 2>/dev/null || true)
  [ "$st" = disabled ] || fail "sonm-$d is '$st' after dpkg -i: the packages must enable nothing"
  inside id "sonm-$d" >/dev/null || fail "no user sonm-$d"
done
echo "installed; users created; nothing enabled or started"

step "a chain in the system's network: anvil, contracts, keys where the defaults expect them"
port=8545
# (nsenter itself, not the in_net function: a function in the background is a subshell,
# and nsenter execs anvil, so $! is anvil's pid.)
nsenter -t "$PID1" --net -- "$ANVIL" --port "$port" --block-time 1 --silent >"$work/anvil.log" 2>&1 &
anvil_pid=$!
for _ in $(seq 100); do in_net bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break; sleep 0.1; done
R=/proc/$PID1/root
# anvil's well-known dev keys (deployer, supplier, consumer): for this local chain only.
SONM_DEPLOY_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 \
  in_net "$TARGET/debug/sonm-deploy" --rpc-url "http://127.0.0.1:$port" --out "$work/addresses.toml" \
  --fund 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --fund 0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC --fund-snm 1000 \
  >"$work/deploy.log" 2>&1 || { cat "$work/deploy.log"; fail "sonm-deploy"; }
install -m 0644 "$work/addresses.toml" "$R/etc/sonm/addresses.toml"
echo 0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d >"$work/worker.key"
inside install -m 0640 -o root -g sonm-worker /dev/stdin /etc/sonm/worker.key <"$work/worker.key"
echo "systemd test password" >"$work/node.password"
inside install -m 0640 -o root -g sonm-node /dev/stdin /etc/sonm/node-key.password <"$work/node.password"
echo 0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a >"$R/tmp/consumer.key"
inside sonm-node keygen --keystore /etc/sonm/node-key.json --password-file /etc/sonm/node-key.password \
  --import-hex-file /tmp/consumer.key >/dev/null
inside chgrp sonm-node /etc/sonm/node-key.json
inside chmod 0640 /etc/sonm/node-key.json
# The DWH's default waits 12 confirmations (a real chain); the node and worker do not need it.
inside sed -i 's/^confirmations = .*/confirmations = 1/' /etc/sonm/dwh.toml
echo "anvil on 127.0.0.1:$port (the defaults' RPC), contracts deployed, keys installed"

step "systemctl enable --now (Type=notify: returns after READY=1)"
for d in rendezvous dwh worker node; do
  t0=$(date +%s%N)
  inside systemctl enable --now "sonm-$d" >"$work/enable-$d.log" 2>&1 ||
    { cat "$work/enable-$d.log"; inside journalctl --no-pager -u "sonm-$d" | tail -30; fail "enable --now sonm-$d"; }
  st="$(prop "sonm-$d" ActiveState) $(prop "sonm-$d" SubState)"
  [ "$st" = "active running" ] || fail "sonm-$d: $st"
  pid=$(prop "sonm-$d" MainPID)
  user=$(inside ps -o user= -p "$pid")
  [ "$user" = "sonm-$d" ] || fail "sonm-$d runs as $user"
  echo "sonm-$d: active (running) as $user, pid $pid, ready in $((($(date +%s%N) - t0) / 1000000)) ms"
done

step "the customer flow through the systemd-run daemons, with the installed CLI"
cli() { inside env SONM_NODE=http://127.0.0.1:15030 sonm "$@"; }
# The worker places its ask after its first benchmarks; the node finds it in the chain's logs.
ask=
for _ in $(seq 120); do
  ask=$(cli --json market asks --benchmarks cpu-cores=1 --max-price 2000000000000 2>/dev/null |
    jq -r '.orders[0].id // empty' || true)
  [ -n "$ask" ] && break
  sleep 1
done
[ -n "$ask" ] || fail "the node never saw the worker's ask"
deal=$(cli --json deal buy "$ask" --duration 0 | jq -r .id)
[ -n "$deal" ] && [ "$deal" != null ] || fail "deal buy"
echo "ask $ask bought: deal $deal"
# The job's files where the CLI (run as root here) reads them; the node gets their bytes.
mkdir -p "$R/srv/job/in"
cp "$JOB" "$R/srv/job/sha256.wasm"
head -c 300000 /dev/urandom >"$R/srv/job/in/data.bin"
echo "hello from the systemd test" >"$R/srv/job/in/note.txt"
cat >"$R/srv/job/job.toml" <<'TOML'
input_dir = "in"

[module]
path = "/srv/job/sha256.wasm"

[limits]
memory_bytes = 67108864
wall_time_ms = 30000
TOML
task=$(cli --json task start "$deal" /srv/job/job.toml | jq -r .task)
[ -n "$task" ] && [ "$task" != null ] || fail "task start"
cli task result "$deal" "$task" --wait 60 --out /srv/job/out >"$work/result.log" 2>&1 ||
  { cat "$work/result.log"; fail "task result"; }
sums=$R/srv/job/out/SHA256SUMS
[ -f "$sums" ] || { cat "$work/result.log"; fail "no SHA256SUMS in the job's output"; }
want=$(cd "$R/srv/job/in" && sha256sum data.bin | cut -d' ' -f1)
grep -q "$want" "$sums" || fail "SHA256SUMS lacks data.bin's hash $want: $(cat "$sums")"
echo "task $task: SHA256SUMS matches sha256sum on the host; receipt verified by the node"
cli deal close "$deal" >/dev/null || fail "deal close"
echo "deal $deal closed"

step "logs in the journal"
for d in rendezvous dwh worker node; do
  n=$(inside journalctl --no-pager -u "sonm-$d" -o cat | wc -l)
  [ "$n" -gt 0 ] || fail "no journal lines from sonm-$d"
  echo "sonm-$d: $n journal lines, e.g.: $(inside journalctl --no-pager -u "sonm-$d" -o cat -n 1)"
done

step "kill -9 restarts (Restart=on-failure)"
for d in rendezvous dwh worker node; do
  old=$(prop "sonm-$d" MainPID)
  inside kill -9 "$old"
  new=
  # RestartSec=5s, then READY=1 again.
  for _ in $(seq 300); do
    pid=$(prop "sonm-$d" MainPID)
    if [ "$(prop "sonm-$d" ActiveState)" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$old" ]; then
      new=$pid
      break
    fi
    sleep 0.1
  done
  [ -n "$new" ] || fail "sonm-$d was not restarted after kill -9 ($(prop "sonm-$d" ActiveState))"
  n=$(prop "sonm-$d" NRestarts)
  [ "$n" = 1 ] || fail "sonm-$d: NRestarts=$n"
  echo "sonm-$d: pid $old killed, restarted as pid $new"
done

step "systemd-analyze security of the running units (0 best .. 10 worst)"
for d in rendezvous dwh node worker; do
  level=$(inside systemd-analyze security --no-pager "sonm-$d.service" |
    sed -nE 's/.*Overall exposure level for .*: ([0-9.]+) .*/\1/p')
  [ -n "$level" ] || fail "systemd-analyze security sonm-$d"
  echo "sonm-$d.service: exposure $level"
  [ "$d" = worker ] || awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || fail "sonm-$d exposure $level > 2.0"
done

step "upgrade with the services running: dpkg -i again"
declare -A before
for d in rendezvous dwh worker node; do before[$d]=$(prop "sonm-$d" MainPID); done
echo "# edited by the supplier" | inside tee -a /etc/sonm/worker.toml >/dev/null
inside sh -c 'dpkg -i /tmp/debs/*.deb' >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i (upgrade)"; }
inside tail -n1 /etc/sonm/worker.toml | grep -q '^# edited by the supplier$' ||
  fail "the upgrade overwrote /etc/sonm/worker.toml"
for d in rendezvous dwh worker node; do
  pid=$(prop "sonm-$d" MainPID)
  [ "$(prop "sonm-$d" ActiveState)" = active ] || fail "sonm-$d is not active after the upgrade"
  [ "$pid" != "${before[$d]}" ] || fail "sonm-$d was not restarted by the upgrade (pid $pid)"
  [ "$(inside systemctl is-enabled "sonm-$d")" = enabled ] || fail "sonm-$d: the upgrade changed its enablement"
  echo "sonm-$d: restarted by the upgrade (pid ${before[$d]} -> $pid), still enabled; edited config kept"
done

step "systemctl stop"
for d in node worker dwh; do
  inside systemctl stop "sonm-$d"
  st="$(prop "sonm-$d" ActiveState) $(prop "sonm-$d" Result)"
  [ "$st" = "inactive success" ] || fail "sonm-$d after stop: $st"
  echo "sonm-$d: stopped cleanly ($st)"
done

step "purge of a running daemon: stopped, then its configuration, state and enablement gone"
inside dpkg --purge sonm-rendezvous >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg --purge"; }
st=$(inside systemctl is-active sonm-rendezvous || true)
[ "$st" = inactive ] || fail "sonm-rendezvous is '$st' after purge"
inside pgrep -x sonm-rendezvous >/dev/null && fail "a sonm-rendezvous process survived the purge"
for f in /etc/sonm/rendezvous.toml /var/lib/sonm/rendezvous /usr/bin/sonm-rendezvous \
  /etc/systemd/system/multi-user.target.wants/sonm-rendezvous.service; do
  inside test -e "$f" -o -L "$f" && fail "purge left $f"
done
inside test -e /etc/sonm/dwh.toml || fail "the purge took another package's configuration"
echo "sonm-rendezvous: stopped by its prerm, purged (config, state, binary, enablement link gone)"

echo
echo "packaging/systemd-test.sh: all checks passed"
