#!/usr/bin/env bash
# Runs Kiln's fuzzers (test/Fuzz) built in <build-dir> with -DKILN_FUZZ=ON:
# first each one's regression inputs (test/Fuzz/regressions/<target>/), then
# <seconds> of fuzzing from a copy of its seed corpus (test/Fuzz/corpus/
# <target>/), so that the repository is never modified. Fails on the first
# crash, sanitizer report, leak, timeout or out-of-memory, and keeps the input
# that caused it.
#
#   test/Fuzz/run-fuzzers.sh <build-dir> <seconds> [target...]
#
# Targets: config, safetensors, token-shard, plan, trainer-state (default: all of them that
# were built). KILN_FUZZ_WORK=dir keeps the grown corpora and any crashing
# inputs there (default: a fresh temporary directory, removed on success).
set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 <build-dir> <seconds> [target...]" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
shift 2
fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
targets=("$@")
if ((${#targets[@]} == 0)); then
  for t in config safetensors token-shard plan trainer-state; do
    [[ -x $build_dir/bin/kiln-fuzz-$t ]] && targets+=("$t")
  done
fi
if ((${#targets[@]} == 0)); then
  echo "run-fuzzers: no fuzzers in $build_dir/bin; build the kiln-fuzzers" \
    "target with -DKILN_FUZZ=ON" >&2
  exit 2
fi

keep_work=${KILN_FUZZ_WORK:+1}
work=${KILN_FUZZ_WORK:-$(mktemp -d /tmp/kiln-fuzz.XXXXXX)}
mkdir -p "$work"

# Inputs past these limits are bugs too: a reader must refuse a file that
# asks for absurd sizes before allocating them.
limits=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10)

status=0
for t in "${targets[@]}"; do
  bin=$build_dir/bin/kiln-fuzz-$t
  if [[ ! -x $bin ]]; then
    echo "run-fuzzers: $bin is missing" >&2
    exit 2
  fi
  out=$work/$t
  mkdir -p "$out/corpus" "$out/artifacts"
  log=$out/fuzz.log

  regressions=("$fuzz_dir/regressions/$t"/*)
  if [[ -e ${regressions[0]} ]]; then
    echo "== $t: ${#regressions[@]} regression inputs"
    if ! "$bin" "${limits[@]}" "${regressions[@]}" >"$out/regressions.log" 2>&1; then
      tail -n 40 "$out/regressions.log"
      echo "run-fuzzers: $t fails on a regression input" >&2
      status=1
      continue
    fi
  fi

  cp -r "$fuzz_dir/corpus/$t/." "$out/corpus/"
  dict=()
  [[ -f $fuzz_dir/$t.dict ]] && dict=(-dict="$fuzz_dir/$t.dict")
  echo "== $t: fuzzing for ${seconds}s"
  set +e
  "$bin" "${limits[@]}" "${dict[@]}" -max_total_time="$seconds" \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
    "$out/corpus" >"$log" 2>&1
  rc=$?
  set -e
  # The last status line (#N ... cov: ft: corp: exec/s:) and the final stats.
  grep -E '^#[0-9]+' "$log" | tail -n 1 || true
  grep -E '^stat::' "$log" || true
  echo "corpus: $(find "$out/corpus" -type f | wc -l) inputs"
  if ((rc != 0)); then
    grep -E -A 30 '==[0-9]+==ERROR|runtime error|deadly signal|uncaught|Timeout|out-of-memory|malloc\(' \
      "$log" | head -n 60 || true
    echo "run-fuzzers: $t failed (exit $rc); inputs in $out/artifacts:" >&2
    ls "$out/artifacts" >&2
    status=1
    keep_work=1
  fi
done

if [[ -n $keep_work ]]; then
  echo "run-fuzzers: corpora and logs in $work"
else
  rm -rf "$work"
fi
exit $status
