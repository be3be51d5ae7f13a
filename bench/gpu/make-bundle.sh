#!/usr/bin/env bash
# Prepares everything a GPU machine needs, on a machine with the compiler:
# GPU machines have no LLVM/MLIR and no network, so the plans are compiled
# here (with cubins for sm_90a, so that nothing compiles there) and the
# runtime's binaries travel with the shared libraries they need, as one
# compressed archive:
#
#   bench/gpu/make-bundle.sh      writes build-gpu-bundle.tar.xz (carry it,
#                                 then run bench/gpu/run.sh on the GPU)
#   bench/gpu/make-bundle.sh --check ARCHIVE
#                                 only checks an archive's size and files
#
#   KILN_BUILD_DIR   the build to take the binaries from (default build/)
#   KILN_GPU_BUNDLE  the archive to write (default build-gpu-bundle.tar.xz)
#   KILN_GPU_ARCH    the cubins' architecture (default sm_90a)
#   KILN_GPU_BUNDLE_LIMIT_MIB  fail above this size (default 40: the
#                    device tool carries at most 64 MiB of working tree)
#
# The archive holds bin/ (kiln-run, kiln-gpu-tests, kiln-gemm-bench,
# kiln-flash-bench), lib/ (their shared libraries but the C library's),
# lib/fallback/ (Debian's libstdc++ and libgcc_s: run.sh uses them only
# when the GPU machine's own are too old) and plans/. Every step says what
# it does; any failure stops the script with its message.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${KILN_BUILD_DIR:-$root/build}
archive=${KILN_GPU_BUNDLE:-$root/build-gpu-bundle.tar.xz}
arch=${KILN_GPU_ARCH:-sm_90a}
limit_mib=${KILN_GPU_BUNDLE_LIMIT_MIB:-40}

# Prints the archive's size and file count; fails above the limit or when
# a part run.sh needs is missing.
check() {
  local archive=$1 bytes files mib listing
  bytes=$(stat -c %s "$archive")
  listing=$(tar -tJf "$archive")
  files=$(grep -vc '/$' <<<"$listing")
  mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
  echo "bundle: $archive, $mib MiB, $files files"
  for part in bin/kiln-run bin/kiln-gpu-tests bin/kiln-gemm-bench \
    bin/kiln-flash-bench plans/test/tiny-llama-bf16.json plans/bench/tiny-llama.json; do
    grep -qx "./$part" <<<"$listing" || {
      echo "make-bundle: $archive has no $part" >&2
      return 1
    }
  done
  if ((bytes > limit_mib * 1048576)); then
    echo "make-bundle: the bundle is $mib MiB, over the ${limit_mib} MiB limit" >&2
    return 1
  fi
}
if [[ ${1:-} == --check ]]; then
  check "${2:?--check needs the archive}"
  exit
fi
trap 'echo "make-bundle: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

if [[ -z ${KILN_SKIP_SETUP:-} ]]; then
  echo "== building (.ci/setup.sh, then the GPU targets)"
  "$root/.ci/setup.sh" >/dev/null
  cmake --build "$build" --target kiln kiln-run kiln-gpu-tests \
    kiln-gemm-bench kiln-flash-bench
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib/fallback" "$stage/plans/test" \
  "$stage/plans/bench"

echo "== binaries and their shared libraries"
for tool in kiln-run kiln-gpu-tests kiln-gemm-bench kiln-flash-bench; do
  if [[ -x $build/bin/$tool ]]; then
    cp "$build/bin/$tool" "$stage/bin/"
  else
    cp "$build/test/Runtime/$tool" "$stage/bin/"
  fi
done
# Not the C library and the loader (the GPU machine's own are newer and
# compatible); libstdc++ and libgcc_s only as a fallback, so that Python
# and torch never load Debian's.
for tool in "$stage"/bin/*; do
  ldd "$tool" | awk '/=> \//{print $3}'
done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' |
  while read -r lib; do
    case $(basename "$lib") in
    libstdc++.so* | libgcc_s.so*) cp -L "$lib" "$stage/lib/fallback/" ;;
    *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done

compile() { # config precision batch seq out [kiln compile flags]
  echo "   $1 $2, batch $3 x $4 tokens${6:+ $6} -> plans/${5#"$stage"/plans/}"
  "$build/bin/kiln" compile "$root/examples/configs/$1/config.json" \
    --precision "$2" --batch "$3" --seq-len "$4" --target "cuda:$arch" \
    --fail-on-spills "${@:6}" -o "$5" >"$stage/compile.log" 2>&1 || {
    cat "$stage/compile.log" >&2
    echo "make-bundle: kiln compile failed for $1 ($2, $3 x $4)" >&2
    exit 1
  }
}
echo "== plans for $arch (kiln compile --fail-on-spills)"
# Small plans for the GPU-vs-host tests, larger ones for the benchmarks.
for model in tiny-llama gpt2-small; do
  for precision in bf16 fp32; do
    compile "$model" "$precision" 2 64 "$stage/plans/test/$model-$precision.json"
  done
done
# NCCL over one rank against the plain step (TrainStepGpuTest).
compile tiny-llama fp32 2 64 "$stage/plans/test/tiny-llama-fp32-collectives.json" \
  --force-collectives
# The benchmarks' plans fused (the default) and not: the step time of each.
for model in tiny-llama:16:1024 llama-1b:4:2048; do
  IFS=: read -r name batch seq <<<"$model"
  compile "$name" bf16 "$batch" "$seq" "$stage/plans/bench/$name.json"
  compile "$name" bf16 "$batch" "$seq" "$stage/plans/bench/$name-unfused.json" \
    --fusion=off
  for plan in "$name" "$name-unfused"; do
    cp "$root/examples/configs/$name/config.json" \
      "$stage/plans/bench/$plan.config.json"
  done
done
rm "$stage/compile.log"
git -C "$root" rev-parse --short HEAD >"$stage/COMMIT" 2>/dev/null || echo unknown >"$stage/COMMIT"

echo "== archive"
rm -f "$archive"
tar -C "$stage" -cf - . | xz -T2 -6 >"$archive.tmp"
mv "$archive.tmp" "$archive"
echo "unpacked: $(du -sh "$stage" | cut -f1)"
trap - ERR
check "$archive"
echo "bundle ready: carry $(basename "$archive") and run bench/gpu/run.sh on the GPU machine"
