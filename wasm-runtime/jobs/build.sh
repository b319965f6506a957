#!/usr/bin/env bash
# Builds the example C jobs to WASM (wasm32-wasi, Debian clang-14 + wasi-libc) and the native
# sha256 reference used by the benchmark. Idempotent: installs the toolchain only when missing,
# rebuilds only what is out of date. Output: wasm-runtime/jobs/build/ (gitignored).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/build"
pkgs=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "build.sh: installing ${missing[*]}" >&2
    sudo_cmd=()
    [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

mkdir -p "$out"
# Same optimisation flags for WASM and native so the benchmark compares code generators, not flags.
cflags=(-O2 -Wall -Wextra -Werror)
# Stripping symbols only shrinks the module (faster compile); it does not change the code.
wasm_cc=(clang-14 --target=wasm32-wasi --sysroot=/usr -fuse-ld=lld -Wl,--strip-all "${cflags[@]}")

# build <source> <output> <compiler and flags...>: rebuilds when the source or this script is newer.
build() {
    local src="$1" dst="$2"
    shift 2
    if [[ ! -e "$dst" || "$src" -nt "$dst" || "${BASH_SOURCE[0]}" -nt "$dst" ]]; then
        "$@" -o "$dst.tmp" "$src"
        mv "$dst.tmp" "$dst"
        echo "built $dst"
    fi
}

for job in hello sha256 wasm-score; do
    build "$here/$job/$job.c" "$out/$job.wasm" "${wasm_cc[@]}"
done
# The native reference of sha256, with the same flags, for the WASM-vs-native benchmark.
build "$here/sha256/sha256.c" "$out/sha256-native" cc "${cflags[@]}"
# And with the compiler of the WASM build, to separate compiler from code generator in the ratio.
build "$here/sha256/sha256.c" "$out/sha256-native-clang" clang-14 "${cflags[@]}"
