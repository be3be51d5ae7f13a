#!/usr/bin/env bash
# Prepares everything a GPU machine needs, on a machine with the compiler:
# GPU machines have nvcc, CMake and Ninja but no LLVM/MLIR and no network, so
# the plans are compiled here (with cubins for sm_90a, so nothing compiles
# there) and the runtime's binaries travel with the shared libraries they
# need. Writes build-gpu-bundle/ (carry it to the GPU machine and run
# bench/gpu/run.sh there).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${KILN_BUILD_DIR:-$root/build}
bundle=${KILN_GPU_BUNDLE:-$root/build-gpu-bundle}
arch=${KILN_GPU_ARCH:-sm_90a}

"$root/.ci/setup.sh" >/dev/null
cmake --build "$build" --target kiln kiln-run kiln-gpu-tests kiln-gemm-bench \
  kiln-flash-bench
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/plans/test" "$bundle/plans/bench"

for tool in kiln-run kiln-gpu-tests kiln-gemm-bench kiln-flash-bench; do
  cp "$build/bin/$tool" "$bundle/bin/" 2>/dev/null ||
    cp "$build/test/Runtime/$tool" "$bundle/bin/"
done
# The shared libraries they load, except the C library and the loader
# (the GPU machine's own are newer and compatible).
for tool in "$bundle"/bin/*; do
  ldd "$tool" | awk '/=> \//{print $3}'
done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$bundle/lib/"; done

compile() { # config precision batch seq out
  "$build/bin/kiln" compile "$root/examples/configs/$1/config.json" \
    --precision "$2" --batch "$3" --seq-len "$4" --target "cuda:$arch" \
    --fail-on-spills -o "$5" 2>/dev/null
}
# Small plans for the GPU-vs-host tests, larger ones for the benchmarks.
for model in tiny-llama gpt2-small; do
  for precision in bf16 fp32; do
    compile "$model" "$precision" 2 64 "$bundle/plans/test/$model-$precision.json"
  done
done
compile tiny-llama bf16 16 1024 "$bundle/plans/bench/tiny-llama.json"
compile llama-1b bf16 4 2048 "$bundle/plans/bench/llama-1b.json"
cp "$root/examples/configs/tiny-llama/config.json" "$bundle/plans/bench/tiny-llama.config.json"
cp "$root/examples/configs/llama-1b/config.json" "$bundle/plans/bench/llama-1b.config.json"
du -sh "$bundle"
echo "bundle ready: $bundle (carry it; then run bench/gpu/run.sh on the GPU machine)"
