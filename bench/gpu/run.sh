#!/usr/bin/env bash
# One command on a GPU machine: a preflight, the GPU tests in groups, the
# attention benchmark, then the training benchmarks against PyTorch on the
# same GPU. Every stage is its own process under `timeout`, inside one
# overall deadline, so that a hang or a crash costs one stage and the run
# always returns its logs (bench/gpu/README.md lists them).
#
#   bench/gpu/run.sh          default run: under 5 minutes
#   bench/gpu/run.sh --full   also torch.compile and the 1.1B Llama:
#                             under 9 minutes
# Either ends, with the time left, with compute-sanitizer on the flash tests
# (where they ran, and not under gVisor).
#
#   OUT                 where the logs go (default build-gpu-results/); at
#                       most 6 files, written as the run goes
#   KILN_GPU_BUNDLE     the archive bench/gpu/make-bundle.sh wrote (default
#                       build-gpu-bundle.tar.xz) or an unpacked bundle
#   KILN_GPU_WORK       scratch: the unpacked bundle, runs, caches
#                       (default /tmp/kiln-gpu; never under $OUT)
#   KILN_GPU_DEADLINE   seconds for the whole run (default 290, --full 520)
#   KILN_GPU_TIMEOUT_<stage>  one stage's limit in seconds (stages below)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
full=0
for arg in "$@"; do
  case $arg in
  --full) full=1 ;;
  -h | --help)
    sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "run.sh: unknown argument '$arg' (see --help)" >&2
    exit 2
    ;;
  esac
done
out=${OUT:-$root/build-gpu-results}
bundle=${KILN_GPU_BUNDLE:-$root/build-gpu-bundle.tar.xz}
work=${KILN_GPU_WORK:-/tmp/kiln-gpu}
deadline=$(($(date +%s) + ${KILN_GPU_DEADLINE:-$((full ? 520 : 290))}))
export PYTHONUNBUFFERED=1
mkdir -p "$out" "$work/logs"
summary=$out/summary.md
echo "| stage | result | seconds | log |" >"$summary"
echo "|---|---|---|---|" >>"$summary"
failures=0
last_result=

# stage NAME LIMIT LOG COMMAND...: runs COMMAND under min(LIMIT, the time
# left) seconds ($KILN_GPU_TIMEOUT_NAME overrides LIMIT), appends its
# output to $out/LOG as it goes and a row to the summary.
stage() {
  local name=$1 limit=$2 logname=$3 log=$out/$3
  shift 3
  local override=KILN_GPU_TIMEOUT_${name//-/_}
  limit=${!override:-$limit}
  local left=$((deadline - $(date +%s)))
  if ((left < 5)); then
    echo "== $name: skipped, out of time" | tee -a "$log"
    echo "| $name | skipped: out of time | 0 | $logname |" >>"$summary"
    last_result="skipped: out of time"
    return
  fi
  ((left < limit)) && limit=$left
  local began part=$work/logs/$name.log
  began=$(date +%s)
  echo "== $name (timeout ${limit}s, $(date -u +%H:%M:%S) UTC)" | tee -a "$log"
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$part" >>"$log"
  local rc=${PIPESTATUS[0]} secs=$(($(date +%s) - began)) result
  case $rc in
  0) result=passed ;;
  124 | 137) result="timed out after ${limit}s" ;;
  *) result="failed (exit status $rc)" ;;
  esac
  # GoogleTest's own counts: a run whose every test skipped did not pass.
  if grep -q '^\[==========\] .* ran' "$part"; then
    local passed skipped failed
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$part" | tail -1)
    skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$part" | tail -1)
    failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$part" | tail -1)
    result="$result: ${passed:-0} passed, ${skipped:-0} skipped, ${failed:-0} failed"
    if ((rc == 0 && ${passed:-0} == 0 && ${skipped:-0} > 0)); then
      result="skipped: $(grep -m1 -o 'no usable GPU.*' "$part" | cut -c1-100 ||
        echo 'all tests skipped')"
    fi
  fi
  [[ $result == passed* || $result == skipped* ]] || failures=$((failures + 1))
  echo "-- $name: $result (${secs}s)" | tee -a "$log"
  tail -n 4 "$part" | sed 's/^/   /'
  echo "| $name | $result | $secs | $logname |" >>"$summary"
  last_result=$result
}

# The bundle: an archive is unpacked into $work; a directory is used as is.
if [[ -f $bundle ]]; then
  rm -rf "$work/bundle" && mkdir -p "$work/bundle"
  tar -xJf "$bundle" -C "$work/bundle" || {
    echo "run.sh: cannot unpack $bundle" >&2
    exit 1
  }
  bundle=$work/bundle
fi
if [[ ! -x $bundle/bin/kiln-run || ! -d $bundle/plans ]]; then
  echo "run.sh: no bundle at $bundle (bin/kiln-run, plans/): run" \
    "bench/gpu/make-bundle.sh where the compiler is and carry its archive" >&2
  exit 1
fi

# Kiln's binaries find the bundle's libraries through wrappers in
# $work/bin, so that Python and torch never see them. Debian's libstdc++
# and libgcc_s are added only where the machine's own are too old.
libs=$bundle/lib
if ! LD_LIBRARY_PATH=$libs "$bundle/bin/kiln-run" --help >/dev/null 2>&1; then
  libs=$libs:$bundle/lib/fallback
fi
mkdir -p "$work/bin"
for tool in "$bundle"/bin/*; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
    "$libs" "$tool" >"$work/bin/$(basename "$tool")"
  chmod +x "$work/bin/$(basename "$tool")"
done
bin=$work/bin
export KILN_CACHE_DIR=$work/kernel-cache

stage preflight 45 env.log "$root/bench/gpu/preflight.sh" "$bin" "$bundle" "$libs"
tests=$bin/kiln-gpu-tests
plans=$bundle/plans
export KILN_GPU_TEST_PLANS=$plans/test
stage gpu-driver 60 tests.log "$tests" --gtest_filter='DriverGpuTest.*:LtGemmGpuTest.*'
# The device library compiles here with NVRTC (once: the cache serves the
# flash group).
stage gpu-kernels 150 tests.log "$tests" \
  --gtest_filter='DeviceKernelTest.*:-DeviceKernelTest.FlashAttention*'
stage gpu-flash 60 tests.log "$tests" --gtest_filter='DeviceKernelTest.FlashAttention*'
stage gpu-train 90 tests.log "$tests" --gtest_filter='TrainStepGpuTest.*'
flash_result=$last_result
stage attention 90 attention.log python3 "$root/bench/gpu/flash_bench.py" \
  --bin "$bin" --timeout 80
if ((full)); then
  stage train-bench 300 bench.log python3 "$root/bench/gpu/torch_bench.py" \
    --bin "$bin" --plans "$plans/bench" --work "$work/runs" --compile
else
  stage train-bench 120 bench.log python3 "$root/bench/gpu/torch_bench.py" \
    --bin "$bin" --plans "$plans/bench" --work "$work/runs" \
    --only tiny-llama tiny-llama-unfused
fi

# With the time left: compute-sanitizer on the flash tests where they ran
# (not skipped) and the machine is not gVisor, which it cannot trace.
if [[ $flash_result != skipped* && $(uname -r) != 4.4.0* ]] &&
  command -v compute-sanitizer >/dev/null; then
  for tool in racecheck memcheck; do
    stage "sanitize-$tool" 90 sanitizer.log env LD_LIBRARY_PATH="$libs" \
      compute-sanitizer --tool "$tool" --error-exitcode 1 \
      "$bundle/bin/kiln-gpu-tests" \
      --gtest_filter='DeviceKernelTest.FlashAttention*'
  done
fi

echo "== summary ($summary; logs in $out)"
cat "$summary"
sed -n '/^| .* | .* | .* | .* | .* | .* |$/p' "$out/bench.log" 2>/dev/null | tail -12
sed -n '/^| [0-9]/p' "$out/attention.log" 2>/dev/null
exit $((failures > 0))
