#!/usr/bin/env bash
# Sets up a fresh Debian bookworm machine for Kiln and builds it.
#
#   .ci/setup.sh            install what is missing, configure build/, build
#   KILN_BUILD_DIR=dir      build somewhere else
#   KILN_BUILD_COMPILER=OFF build only the runtime (no LLVM/MLIR needed)
#   KILN_SANITIZE=list      build with sanitizers (-DKILN_SANITIZE, e.g.
#                           address,undefined) and debug info; use with
#                           KILN_BUILD_DIR
#
# Idempotent: packages already installed are not touched, and a configured
# build directory is only rebuilt.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KILN_BUILD_DIR:-$root/build}
build_compiler=${KILN_BUILD_COMPILER:-ON}
sanitize=${KILN_SANITIZE:-}
build_type=Release
if [[ -n $sanitize ]]; then
  build_type=RelWithDebInfo # reports name source lines
fi

packages=(
  cmake ninja-build g++ python3
  libfmt-dev nlohmann-json3-dev libopenblas-openmp-dev libopenmpi-dev openmpi-bin
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  python3-torch python3-numpy
)
if [[ $build_compiler == ON ]]; then
  packages+=(llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools)
  # The fuzzers (test/Fuzz, KILN_FUZZ=ON): clang, libFuzzer and the
  # sanitizer runtimes. Not libomp-22-dev: it puts a libgomp.so.1 into
  # /usr/lib/llvm-22/lib, which the compiler's rpath then loads for GCC's.
  packages+=(clang-22 libfuzzer-22-dev libclang-rt-22-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if ((${#missing[@]})); then
  echo "kiln setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -f $build_dir/build.ninja ]]; then
  cmake -G Ninja -S "$root" -B "$build_dir" \
    -DCMAKE_BUILD_TYPE="$build_type" \
    -DKILN_BUILD_COMPILER="$build_compiler" \
    -DKILN_SANITIZE="$sanitize" \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit
fi
cmake --build "$build_dir" -j "${KILN_JOBS:-2}"
