#!/usr/bin/env bash
# Compile check of the device library runtime/cuda/device/kiln_device.cuh,
# for machines with the CUDA toolkit and no GPU (ctest label cuda-compile).
#
#   compile_check.sh [nvcc]      default: $CUDA_HOME/bin/nvcc, then PATH
#
# 1. nvcc compiles DeviceKernels.cu (every template the wrappers
#    instantiate: f32 and bf16, head dims 64 and 128) to cubins for sm_80
#    and sm_90a with -Xptxas -v and every warning an error; the check fails
#    when compilation fails or any function spills registers to local
#    memory.
# 2. NVRTC compiles the same source with the header given in memory and
#    CUDA's include directory as the only search path, as the runtime does,
#    so a host-only construct (a standard header, an unannotated lambda)
#    fails here too; its ptxas output is checked for spills the same way.
#    Skipped, with a note, when nvrtc.h, libnvrtc or a C++ compiler is
#    missing.
# Prints, per architecture, the kernels compiled, the most registers and
# stack any uses, and the spills.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../../.." && pwd)
header_dir=$root/runtime/cuda/device
source=$here/DeviceKernels.cu

nvcc=${1:-}
if [[ -z $nvcc ]]; then
  if [[ -n ${CUDA_HOME:-} && -x $CUDA_HOME/bin/nvcc ]]; then
    nvcc=$CUDA_HOME/bin/nvcc
  else
    nvcc=$(command -v nvcc || true)
  fi
fi
if [[ -z $nvcc || ! -x $nvcc ]]; then
  echo "compile_check: nvcc not found (pass it or set CUDA_HOME)" >&2
  exit 1
fi
cuda_home=$(cd "$(dirname "$nvcc")/.." && pwd)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

# Summarises `ptxas -v` output: kernels, the largest register count and
# stack frame, and every function with spill stores or loads (returns 1 then).
summarise() {
  local arch=$1 log=$2
  awk -v arch="$arch" '
    /Compiling entry function/ {
      match($0, /\047[^\047]*\047/); entry = substr($0, RSTART + 1, RLENGTH - 2)
      kernels++
    }
    /Function properties for/ { fn = $NF }
    /bytes spill stores/ {
      # nvcc and NVRTC prefix these lines differently: find the numbers.
      for (i = 1; i + 3 <= NF; i++) {
        if ($(i + 1) == "bytes" && $(i + 2) == "stack") stack = $i
        if ($(i + 2) == "spill" && $(i + 3) == "stores,") stores = $i
        if ($(i + 2) == "spill" && $(i + 3) == "loads") loads = $i
      }
      if (stack + 0 > maxStack) { maxStack = stack + 0; stackFn = fn }
      if (stores + 0 > 0 || loads + 0 > 0) {
        spills = spills sprintf("\n  %s: %d bytes spill stores, " \
                                "%d bytes spill loads", fn, stores, loads)
        bad = 1
      }
    }
    /Used [0-9]+ registers/ {
      match($0, /Used [0-9]+ registers/)
      regs = substr($0, RSTART + 5, RLENGTH - 15) + 0
      if (regs > maxRegs) { maxRegs = regs; regsFn = entry }
    }
    END {
      printf "%s: %d kernels, max %d registers (%s), ", arch, kernels, \
             maxRegs, regsFn
      printf "max stack frame %d bytes (%s), ", maxStack, stackFn
      if (bad) { printf "SPILLS:%s\n", spills; exit 1 }
      printf "no spills\n"
    }' "$log"
}

archs=(sm_80 sm_90a)

# Runs a compile in the background: its output goes to $work/<name>.log,
# its exit status to $work/<name>.rc.
start() {
  local name=$1
  shift
  (
    set +e
    "$@" >"$work/$name.log" 2>&1
    echo $? >"$work/$name.rc"
  ) &
}

# Waits for every compile, then reports each: the errors of a failed one,
# else its ptxas summary.
report() {
  local name=$1 what=$2
  if [[ $(cat "$work/$name.rc") != 0 ]]; then
    grep -av '^ptxas\|bytes stack frame' "$work/$name.log" >&2 || true
    echo "compile_check: $what failed" >&2
    status=1
  elif ! summarise "$what" "$work/$name.log"; then
    status=1
  fi
}

for arch in "${archs[@]}"; do
  start "nvcc-$arch" "$nvcc" -std=c++17 --cubin -arch="$arch" -Xptxas -v \
    -Werror all-warnings -Xcompiler -Wall,-Wextra -I"$header_dir" \
    -o "$work/kernels-$arch.cubin" "$source"
done

# NVRTC, as the runtime compiles: the header in memory, C++17.
cxx=${CXX:-c++}
nvrtc=0
if [[ -f $cuda_home/include/nvrtc.h ]] &&
  ls "$cuda_home"/lib64/libnvrtc.so* >/dev/null 2>&1 &&
  command -v "$cxx" >/dev/null; then
  nvrtc=1
  "$cxx" -std=c++17 -O1 -Wall -Wextra -I"$cuda_home/include" \
    "$here/nvrtc_check.cpp" -o "$work/nvrtc_check" \
    -L"$cuda_home/lib64" -lnvrtc -Wl,-rpath,"$cuda_home/lib64"
  for arch in "${archs[@]}"; do
    start "nvrtc-$arch" "$work/nvrtc_check" "$header_dir/kiln_device.cuh" \
      "$source" "$arch" "$cuda_home/include"
  done
fi

wait
for arch in "${archs[@]}"; do
  report "nvcc-$arch" "nvcc $arch"
done
if ((nvrtc)); then
  for arch in "${archs[@]}"; do
    report "nvrtc-$arch" "nvrtc $arch"
  done
else
  echo "compile_check: NVRTC check skipped (no nvrtc.h, libnvrtc or $cxx)"
fi

if ((status == 0)); then
  echo "compile_check: passed"
else
  echo "compile_check: FAILED" >&2
fi
exit $status
