#!/usr/bin/env bash
# Builds one .deb per daemon (sonm-worker, sonm-node, sonm-dwh, sonm-rendezvous, sonm-keeper) plus the CLI
# (sonm-cli) with `dpkg-deb --build` over staged trees: no cargo-deb, nothing from crates.io.
#
#   packaging/build-debs.sh                      # cargo build --release (fat LTO: slow), then package
#   packaging/build-debs.sh --profile debug --no-build   # package target/debug as it is (the CI test)
#
# Options: --profile release|debug (default release), --no-build (use the binaries already in
# target/<profile>), --out DIR (default target/debian), --only PACKAGE (repeatable: just these,
# e.g. --only sonm-rendezvous). Needs dpkg-dev (dpkg-shlibdeps), binutils (strip), help2man and
# dpkg-deb >= 1.19 (--root-owner-group: root-owned files without fakeroot).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD

# Cargo's output directory (CARGO_TARGET_DIR when set, as cargo itself does).
TARGET=${CARGO_TARGET_DIR:-target}
profile=release
build=1
out=$TARGET/debian
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out=$2; shift 2 ;;
    --only) only+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build-debs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release | debug) ;;
  *) echo "build-debs.sh: --profile is release or debug" >&2; exit 2 ;;
esac

# package  binary           crate dir         cargo package
PACKAGES=(
  "sonm-worker     sonm-worker      daemons/worker      sonm-worker"
  "sonm-node       sonm-node        daemons/node        sonm-node"
  "sonm-dwh        sonm-dwh         daemons/dwh         sonm-dwh"
  "sonm-rendezvous sonm-rendezvous  daemons/rendezvous  sonm-rendezvous"
  "sonm-keeper     sonm-keeper      daemons/keeper      sonm-keeper"
  "sonm-cli        sonm             daemons/cli         sonm-cli"
)

if [ ${#only[@]} -gt 0 ]; then
  selected=()
  for p in "${PACKAGES[@]}"; do
    read -r pkg _ <<<"$p"
    for o in "${only[@]}"; do [ "$o" = "$pkg" ] && selected+=("$p"); done
  done
  [ ${#selected[@]} = ${#only[@]} ] || { echo "build-debs.sh: unknown package in --only ${only[*]}" >&2; exit 2; }
  PACKAGES=("${selected[@]}")
fi

if [ "$build" = 1 ]; then
  args=()
  for p in "${PACKAGES[@]}"; do
    read -r _ _ _ crate <<<"$p"
    args+=(-p "$crate")
  done
  flag=()
  [ "$profile" = release ] && flag=(--release)
  cargo build --locked "${flag[@]}" --bins "${args[@]}"
fi

arch=$(dpkg --print-architecture)
maintainer="SONM developers <sonm@example.invalid>"
date_r=$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo_field() { # crate-dir field -> value of `field = "..."` in its Cargo.toml [package]
  sed -n "s/^$2 = \"\(.*\)\"$/\1/p" "$ROOT_DIR/$1/Cargo.toml" | head -n1
}

synopsis() {
  case "$1" in
    sonm-worker) echo "SONM worker: sells this box's resources, runs customers' tasks" ;;
    sonm-node) echo "SONM node: the customer's local API (market, deals, tasks)" ;;
    sonm-dwh) echo "SONM DWH: chain indexer and query API" ;;
    sonm-rendezvous) echo "SONM rendezvous server: NAT traversal and relay" ;;
    sonm-keeper) echo "SONM gate keeper: moves SNM between two chains' gates" ;;
    sonm-cli) echo "SONM command-line client of the local sonm-node" ;;
  esac
}

# dpkg-shlibdeps wants a debian/control around it.
mkdir -p "$work/shlibs/debian"
printf 'Source: sonm\n\nPackage: sonm\nArchitecture: any\n' >"$work/shlibs/debian/control"

for p in "${PACKAGES[@]}"; do
  read -r pkg bin dir _ <<<"$p"
  name=${pkg#sonm-}
  version=$(cargo_field "$dir" version)
  summary=$(cargo_field "$dir" description)
  binary=$TARGET/$profile/$bin
  [ -x "$binary" ] || { echo "build-debs.sh: $binary is missing (build it, or drop --no-build)" >&2; exit 1; }
  stage=$work/$pkg
  install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/share/doc/$pkg"
  # What dh_strip does: debug info does not ship (release keeps line tables for backtraces).
  strip --strip-unneeded -o "$stage/usr/bin/$bin" "$binary"
  chmod 0755 "$stage/usr/bin/$bin"
  # The manual page, from the binary's own --help (help2man): one source of truth for options.
  install -d -m 0755 "$stage/usr/share/man/man1"
  help2man --no-info --section 1 --name "$(synopsis "$pkg")" --version-string "$version" \
    "$stage/usr/bin/$bin" | gzip -9n >"$stage/usr/share/man/man1/$bin.1.gz"
  chmod 0644 "$stage/usr/share/man/man1/$bin.1.gz"

  # Documentation: the crate's README, copyright, a changelog.
  install -m 0644 "$dir/README.md" "$stage/usr/share/doc/$pkg/README.md"
  install -m 0644 packaging/copyright "$stage/usr/share/doc/$pkg/copyright"
  {
    printf '%s (%s) unstable; urgency=medium\n\n' "$pkg" "$version"
    printf '  * Built from the SONM workspace at %s.\n\n' "$rev"
    printf ' -- %s  %s\n' "$maintainer" "$date_r"
  } | gzip -9n >"$stage/usr/share/doc/$pkg/changelog.gz"
  chmod 0644 "$stage/usr/share/doc/$pkg/changelog.gz"

  depends=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e "$stage/usr/bin/$bin" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
  extra=""
  suggests=""
  if [ "$pkg" != sonm-cli ]; then
    # A daemon: its unit, default configuration (installed by the postinst when absent) and
    # maintainer scripts.
    install -d -m 0755 "$stage/lib/systemd/system" "$stage/usr/share/$pkg"
    install -m 0644 "systemd/$pkg.service" "$stage/lib/systemd/system/$pkg.service"
    install -m 0644 "packaging/config/$name.toml" "$stage/usr/share/$pkg/$name.toml"
    for script in postinst prerm postrm; do
      sed "s/@NAME@/$name/g" "packaging/maint/$script.in" >"$stage/DEBIAN/$script"
      chmod 0755 "$stage/DEBIAN/$script"
    done
    depends="$depends, adduser"
    extra="The package creates the system user $pkg and, if absent, /etc/sonm/$name.toml, and installs the systemd unit $pkg.service without enabling it."
  fi
  if [ "$pkg" = sonm-worker ]; then
    # Containers (opt-in) run with runc, give /output a loop-mounted ext4 of the quota
    # (e2fsprogs) and outbound networking with a veth and an nftables table.
    suggests="runc, iproute2, nftables, e2fsprogs"
    # The containers drop-in, not active: a supplier who opts into containers copies it to
    # /etc/systemd/system/sonm-worker.service.d/ (see its comments).
    install -m 0644 systemd/sonm-worker.service.d/containers.conf "$stage/usr/share/$pkg/containers.conf"
    # The wasm-score benchmark job (wasm-runtime/jobs/build.sh builds it).
    if [ -f wasm-runtime/jobs/build/wasm-score.wasm ]; then
      install -d -m 0755 "$stage/usr/share/sonm"
      install -m 0644 wasm-runtime/jobs/build/wasm-score.wasm "$stage/usr/share/sonm/wasm-score.wasm"
    else
      echo "build-debs.sh: warning: wasm-runtime/jobs/build/wasm-score.wasm is missing" \
        "(run wasm-runtime/jobs/build.sh); the worker will report wasm-score 0" >&2
    fi
  fi

  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum >DEBIAN/md5sums)
  chmod 0644 "$stage/DEBIAN/md5sums"
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  {
    echo "Package: $pkg"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    echo "Depends: $depends"
    if [ -n "$suggests" ]; then echo "Suggests: $suggests"; fi
    echo "Section: net"
    echo "Priority: optional"
    echo "Description: $(synopsis "$pkg")"
  } >"$stage/DEBIAN/control"
  # The long description: the crate's description, wrapped, and what the package does.
  {
    echo "$summary${extra:+ $extra}" | fold -s -w 72 | sed 's/ *$//; s/^/ /'
  } >>"$stage/DEBIAN/control"
  chmod 0644 "$stage/DEBIAN/control"

  deb="$out/${pkg}_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
  echo "$deb"
done
