#!/usr/bin/env bash
# One command on a GPU machine: the GPU tests, then the GPU benchmarks
# against PyTorch on the same GPU, with a short table last.
#
#   bench/gpu/run.sh        (after bench/gpu/make-bundle.sh on a machine
#                            with the compiler, carrying build-gpu-bundle/)
#
# Without a bundle it builds the runtime here (-DKILN_BUILD_COMPILER=OFF;
# needs fmt, nlohmann-json, OpenBLAS, OpenSSL and GoogleTest), but the plans
# still come from a machine with the compiler.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bundle=${KILN_GPU_BUNDLE:-$root/build-gpu-bundle}
out=${OUT:-$root/build-gpu-results}
mkdir -p "$out"

if [[ -x $bundle/bin/kiln-run ]]; then
  bin=$bundle/bin
  export LD_LIBRARY_PATH=$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  echo "no bundle at $bundle: building the runtime here"
  cmake -G Ninja -S "$root" -B "$root/build-gpu" -DCMAKE_BUILD_TYPE=Release \
    -DKILN_BUILD_COMPILER=OFF && cmake --build "$root/build-gpu" || exit 1
  bin=$root/build-gpu/bin
  cp "$root/build-gpu/test/Runtime/kiln-gpu-tests" "$bin/" 2>/dev/null
fi
plans=$bundle/plans
if [[ ! -d $plans ]]; then
  echo "no plans in $plans: run bench/gpu/make-bundle.sh where the compiler is" >&2
  exit 1
fi
nvidia-smi -L || true

echo "== GPU tests"
KILN_GPU_TEST_PLANS=$plans/test "$bin/kiln-gpu-tests" 2>&1 | tee "$out/gpu-tests.log" | tail -25
tests_rc=${PIPESTATUS[0]}

echo "== GPU benchmarks"
python3 "$root/bench/gpu/torch_bench.py" --bin "$bin" --plans "$plans/bench" \
  --out "$out" 2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "== attention benchmark"
python3 "$root/bench/gpu/flash_bench.py" --bin "$bin" --out "$out" 2>&1 |
  tee "$out/attention.log"
attention_rc=${PIPESTATUS[0]}

echo "== summary (full logs in $out)"
grep -E "PASSED|FAILED|SKIPPED" "$out/gpu-tests.log" | tail -3
sed -n '/^| /,$p' "$out/bench.log"
sed -n '/^| /,$p' "$out/attention.log"
exit $(( tests_rc || bench_rc || attention_rc ))
