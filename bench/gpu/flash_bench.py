"""Kiln's FlashAttention kernels against PyTorch's, on the same GPU, in one run.

For head dim 128 (16 heads, 16k tokens per batch: batch x seq = 4 x 4096,
2 x 8192, 1 x 16384), causal and not, BF16: forward and backward TFLOP/s of
Kiln's tensor-core kernels (kiln-flash-bench: NVRTC-compiled device-library
kernels at the GPU cost model's tile sizes, medians of 20 CUDA-event
timings) and of torch.nn.functional.scaled_dot_product_attention restricted
to its flash backend (FlashAttention-2), timed the same way. FLOPs as
FlashAttention counts them: 4 b h s^2 d forward, 2.5 times that backward,
halved when causal. Prints each shape's result as it is measured and a
markdown table last, with Kiln / torch ratios; a torch shape that fails is
reported and left out of the ratio.

    python3 bench/gpu/flash_bench.py --bin build/bin [--timeout S]
"""

import argparse
import math
import os
import subprocess
import sys
import traceback

import torch
import torch.nn.functional as F

from torch_bench import time_cuda

HEADS, HEAD_DIM, TOKENS = 16, 128, 16384
SEQS = (4096, 8192, 16384)


def flash_only():
    """A context that allows only SDPA's flash backend."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:  # torch < 2.3
        return torch.backends.cuda.sdp_kernel(
            enable_flash=True, enable_math=False, enable_mem_efficient=False)


def torch_attention(batch, seq, causal):
    """(forward ms, backward ms) of SDPA's flash backend, inputs laid out
    as Kiln's ([batch, seq, heads, head_dim], viewed as b h s d)."""
    def make():
        x = torch.randn(batch, seq, HEADS, HEAD_DIM, device="cuda",
                        dtype=torch.bfloat16)
        return x.transpose(1, 2).requires_grad_()
    q, k, v = make(), make(), make()
    dout = torch.randn_like(q)
    with flash_only():
        forward = time_cuda(
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
            warmup=3)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        backward = time_cuda(
            lambda: torch.autograd.grad(out, (q, k, v), dout,
                                        retain_graph=True),
            warmup=3)
    return forward, backward


def tflops(batch, seq, causal, ms, backward):
    flops = 4.0 * batch * HEADS * seq * seq * HEAD_DIM / (2 if causal else 1)
    return (2.5 if backward else 1.0) * flops / (ms * 1e-3) / 1e12


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True,
                        help="directory with kiln-flash-bench")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds for kiln-flash-bench")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("flash_bench: no CUDA GPU visible to torch")
    gpu = torch.cuda.get_device_name()
    print(f"# {gpu}, torch {torch.__version__}")

    shapes = [(TOKENS // seq, seq, causal) for seq in SEQS
              for causal in (False, True)]
    command = [os.path.join(args.bin, "kiln-flash-bench")]
    for batch, seq, causal in shapes:
        command += [str(batch), str(seq), str(HEADS), str(HEADS),
                    str(HEAD_DIM), str(int(causal))]
    try:
        run = subprocess.run(command, capture_output=True, text=True,
                             timeout=args.timeout)
    except subprocess.TimeoutExpired:
        sys.exit(f"flash_bench: kiln-flash-bench ran past {args.timeout} s")
    print(run.stdout + run.stderr, end="", flush=True)
    if run.returncode != 0:
        sys.exit(f"flash_bench: kiln-flash-bench failed ({run.returncode})")
    kiln = {}
    for line in run.stdout.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        f = line.split()
        kiln[(int(f[1]), bool(int(f[5])))] = (float(f[6]), float(f[8]))

    rows = []
    for batch, seq, causal in shapes:
        kf, kb = kiln[(seq, causal)]
        try:
            tf, tb = torch_attention(batch, seq, causal)
        except Exception:  # noqa: BLE001 - report and go on
            print(f"torch {batch} x {seq} causal {causal} failed:\n"
                  f"{traceback.format_exc()}", flush=True)
            tf = tb = math.nan
        print(f"{batch} x {seq} causal {causal}: kiln {kf:.3f}/{kb:.3f} ms, "
              f"torch {tf:.3f}/{tb:.3f} ms (fwd/bwd)", flush=True)
        rows.append((batch, seq, causal,
                     tflops(batch, seq, causal, kf, False),
                     tflops(batch, seq, causal, tf, False),
                     tflops(batch, seq, causal, kb, True),
                     tflops(batch, seq, causal, tb, True)))

    print(f"\n{gpu}: attention TFLOP/s, head dim {HEAD_DIM}, {HEADS} heads, "
          "BF16 (medians of 20 CUDA-event timings, same run)")
    print("| batch x seq | causal | Kiln fwd | torch flash fwd | ratio "
          "| Kiln bwd | torch flash bwd | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for batch, seq, causal, kf, tf, kb, tb in rows:
        print(f"| {batch} x {seq} | {'yes' if causal else 'no'} | {kf:.0f} | "
              f"{tf:.0f} | {kf / tf:.2f} | {kb:.0f} | {tb:.0f} | "
              f"{kb / tb:.2f} |")


if __name__ == "__main__":
    main()
