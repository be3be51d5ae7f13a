"""GPU benchmarks of Kiln against PyTorch on the same GPU, in one run.

1. GEMM TFLOP/s at the model's shapes: Kiln's cuBLASLt path
   (kiln-gemm-bench) against torch.matmul, BF16, medians of CUDA-event
   timings.
2. Training-step tokens/s and MFU for each plan in --plans (tiny Llama and
   a 1.1B Llama; --only picks some): Kiln (kiln-run --backend cuda
   --no-checkpoint, median tokens/s of the steps after warm-up) against
   PyTorch eager (F.scaled_dot_product_attention, as a PyTorch user writes
   it) and, with --compile, torch.compile, running the same math
   (test/python/hf_reference.py, BF16 compute, FP32 master weights, fused
   AdamW) on the same batch shape.

Every measurement is guarded: one that fails or runs past its timeout is
reported and the table keeps the others. Each row is printed as soon as it
is measured; the whole table again at the end. Runs and token shards go to
--work (a temporary directory by default), never next to the logs.

MFU = 6 * parameters * tokens/s / peak, with the card's datasheet dense
BF16 peak (H100 SXM 989 TFLOP/s, H200 989 TFLOP/s); attention FLOPs are not
counted. Prints a markdown table last.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "test", "python"))
import hf_reference as ref  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
WARMUP, STEPS = 3, 12
NAN = float("nan")


def peak_flops():
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16.items():
        if key in name:
            return name, value
    return name, None


def time_cuda(fn, repeat=20, warmup=5):
    """Median milliseconds of `repeat` CUDA-event timings of fn() after
    `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def gemm_shapes(config, tokens):
    h, inner = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads) * (h // heads)
    return [(tokens, h, h), (tokens, kv, h), (tokens, inner, h),
            (tokens, h, inner), (tokens, config["vocab_size"], h)]


def kiln_tokens_per_s(bin_dir, plan, config_path, vocab, work, timeout):
    shard = os.path.join(work, "bench-tokens.bin")
    meta = json.load(open(plan))["model"]
    need = (STEPS + 2) * meta["batch"] * meta["seq_len"] + 1
    ref.write_token_shard(shard, torch.randint(0, min(vocab, 65535),
                                               (need,)).tolist())
    run_dir = tempfile.mkdtemp(dir=work)
    subprocess.run([os.path.join(bin_dir, "kiln-run"), plan, "--data", shard,
                    "--steps", str(STEPS), "--backend", "cuda", "--out",
                    run_dir, "--config", config_path, "--no-checkpoint"],
                   check=True, timeout=timeout)
    rows = [json.loads(line)
            for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    return statistics.median(r["tokens_per_s"] for r in rows[WARMUP:])


def guarded(what, fn):
    """fn(), or NaN after printing why it failed (one failure must not lose
    the table)."""
    began = time.perf_counter()
    try:
        value = fn()
    except subprocess.TimeoutExpired as error:
        print(f"{what}: timed out after {error.timeout:.0f} s", flush=True)
        return NAN
    except subprocess.CalledProcessError as error:
        print(f"{what}: failed with exit status {error.returncode}",
              flush=True)
        return NAN
    except Exception:  # noqa: BLE001 - report and go on
        print(f"{what}: failed:\n{traceback.format_exc()}", flush=True)
        return NAN
    print(f"{what}: {value:.1f} ({time.perf_counter() - began:.0f} s)",
          flush=True)
    return value


def torch_tokens_per_s(config, batch, seq, compiled):
    params = {n: p.cuda().requires_grad_(True)
              for n, p in ref.random_parameters(config, seed=0).items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-4, fused=True)

    def loss_fn(tokens, targets):
        return ref.loss(config, params, tokens, targets, dtype=torch.bfloat16,
                        sdpa=True)

    step_loss = torch.compile(loss_fn) if compiled else loss_fn
    rates = []
    for step in range(STEPS):
        data = torch.randint(0, config["vocab_size"], (batch, seq + 1),
                             device="cuda")
        torch.cuda.synchronize()
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step_loss(data[:, :-1], data[:, 1:]).backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        optimizer.step()
        torch.cuda.synchronize()
        if step >= WARMUP:
            rates.append(batch * seq / (time.perf_counter() - began))
    return statistics.median(rates)


def print_row(row):
    label, unit, kiln, eager, compiled = row
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    ratio = kiln / eager if eager and not math.isnan(eager) else NAN
    print(f"| {label} | {unit} | {fmt(kiln)} | {fmt(eager)} | "
          f"{fmt(compiled)} | {ratio:.2f}x |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True,
                        help="directory with kiln-run and kiln-gemm-bench")
    parser.add_argument("--plans", required=True)
    parser.add_argument("--work", help="where runs go (default: a new "
                        "temporary directory)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="plan names (e.g. tiny-llama) to run")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds for each Kiln subprocess")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_bench: no CUDA GPU visible to torch")
    work = args.work or tempfile.mkdtemp(prefix="kiln-torch-bench-")
    os.makedirs(work, exist_ok=True)
    card, peak = peak_flops()
    print(f"# {card}, torch {torch.__version__}; runs in {work}", flush=True)
    print("| benchmark | unit | kiln | pytorch eager | torch.compile | "
          "kiln / eager |", flush=True)
    rows = []

    def add(row):
        rows.append(row)
        print_row(row)

    plans = sorted(p for p in os.listdir(args.plans)
                   if p.endswith(".json") and not p.endswith(".config.json"))
    if args.only is not None:
        plans = [p for p in plans if p[:-len(".json")] in args.only]
    for name in plans:
        plan = os.path.join(args.plans, name)
        config_path = plan.replace(".json", ".config.json")
        config = json.load(open(config_path))
        meta = json.load(open(plan))["model"]
        batch, seq = meta["batch"], meta["seq_len"]
        n_params = sum(torch.Size(s).numel()
                       for s in ref.parameter_shapes(config).values())
        # GEMMs at this model's shapes.
        for m, n, k in gemm_shapes(config, batch * seq):
            def kiln_gemm():
                run = subprocess.run(
                    [os.path.join(args.bin, "kiln-gemm-bench"), str(m),
                     str(n), str(k)], check=True, capture_output=True,
                    text=True, timeout=args.timeout)
                return float(run.stdout.strip().splitlines()[-1].split()[4])

            def torch_gemm():
                a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
                ms = time_cuda(lambda: torch.matmul(a, b.T))
                return 2 * m * n * k / (ms * 1e-3) / 1e12
            label = f"GEMM {m}x{n}x{k} ({name})"
            add((label, "TFLOP/s", guarded(f"{label} kiln", kiln_gemm),
                 guarded(f"{label} torch", torch_gemm), None))
        # Whole training steps.
        label = f"train step {name} (b{batch} x s{seq})"
        results = {
            "kiln": guarded(f"{label} kiln", lambda: kiln_tokens_per_s(
                args.bin, plan, config_path, config["vocab_size"], work,
                args.timeout)),
            "eager": guarded(f"{label} eager", lambda: torch_tokens_per_s(
                config, batch, seq, False)),
            "compile": guarded(f"{label} torch.compile",
                               lambda: torch_tokens_per_s(
                                   config, batch, seq, True))
            if args.compile else None,
        }
        add((label, "tokens/s", results["kiln"], results["eager"],
             results["compile"]))
        if peak:
            add((f"MFU {name}", "%",
                 *(None if results[k] is None
                   else 100 * 6 * n_params * results[k] / peak
                   for k in ("kiln", "eager", "compile"))))
        torch.cuda.empty_cache()

    print(f"\nGPU benchmarks on {card}, torch {torch.__version__}; "
          f"medians; MFU against {peak and peak / 1e12} TFLOP/s dense BF16")
    print("| benchmark | unit | kiln | pytorch eager | torch.compile | "
          "kiln / eager |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print_row(row)


if __name__ == "__main__":
    main()
