#!/usr/bin/env bash
# The first stage of bench/gpu/run.sh (its env.log): what machine this is
# and where its CUDA pieces are, as the runtime resolves them.
# (Its own timeouts run in the foreground: run.sh's stage timeout then
# reaches their commands too.)
#
#   preflight.sh <wrapped bin dir> <bundle dir> <library path>
set -uo pipefail
bin=$1 bundle=$2 libs=$3
echo "bundle: $bundle (commit $(cat "$bundle/COMMIT" 2>/dev/null || echo unknown)); Kiln's libraries: $libs"
kernel=$(uname -r)
echo "kernel: $kernel$([[ $kernel == 4.4.0* ]] && echo ' (gVisor)')"
grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release 2>/dev/null
echo "cpus: $(nproc), memory: $(free -g 2>/dev/null | awk '/^Mem/{print $2 " GiB"}')"
timeout --foreground 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
  --format=csv || echo "nvidia-smi failed (exit status $?)"
site=$(timeout --foreground 20 python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
timeout --foreground 60 python3 - <<'PY' || echo "python3/torch check failed (exit status $?)"
import site, sys
print("python", sys.version.split()[0], "site-packages:", *site.getsitepackages())
try:
    import torch
    print("torch", torch.__version__, "CUDA", torch.version.cuda,
          "available:", torch.cuda.is_available(),
          torch.cuda.get_device_name() if torch.cuda.is_available() else "")
except Exception as error:  # noqa: BLE001
    print("torch not importable:", error)
PY
echo "-- where the CUDA pieces are"
ldconfig -p 2>/dev/null | grep -E 'lib(cuda|nvrtc|cublasLt|nccl)[.-]' | sed 's/^[[:space:]]*/ldconfig: /'
timeout --foreground 30 find /usr/local /usr/lib /opt ${site:+"$site"} -xdev \
  \( -name 'libcuda.so*' -o -name 'libnvrtc*.so*' -o -name 'libcublasLt.so*' \
  -o -name 'libnccl.so*' -o -name cuda_bf16.h \) 2>/dev/null | sort | sed 's/^/found: /'
command -v compute-sanitizer | sed 's/^/compute-sanitizer: /'
echo "-- what Kiln's runtime resolved (kiln-run --cuda-info)"
"$bin/kiln-run" --cuda-info
