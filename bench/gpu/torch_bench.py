"""GPU benchmarks of Kiln against PyTorch on the same GPU, in one run.

1. GEMM TFLOP/s at the model's shapes: Kiln's cuBLASLt path
   (kiln-gemm-bench) against torch.matmul, BF16, medians of CUDA-event
   timings.
2. Training-step tokens/s and MFU for each plan in --plans (tiny Llama and
   a 1.1B Llama): Kiln (kiln-run --backend cuda, median tokens/s of the steps
   after warm-up) against PyTorch eager and torch.compile running the same
   math (test/python/hf_reference.py, BF16 compute, FP32 master weights,
   fused AdamW) on the same batch shape.

MFU = 6 * parameters * tokens/s / peak, with the card's datasheet dense
BF16 peak (H100 SXM 989 TFLOP/s, H200 989 TFLOP/s); attention FLOPs are not
counted. Prints a markdown table last.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "test", "python"))
import hf_reference as ref  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
WARMUP, STEPS = 3, 12


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


def kiln_tokens_per_s(bin_dir, plan, config_path, vocab, out):
    shard = os.path.join(out, "bench-tokens.bin")
    meta = json.load(open(plan))["model"]
    need = (STEPS + 2) * meta["batch"] * meta["seq_len"] + 1
    ref.write_token_shard(shard, torch.randint(0, min(vocab, 65535),
                                               (need,)).tolist())
    run_dir = tempfile.mkdtemp(dir=out)
    subprocess.run([os.path.join(bin_dir, "kiln-run"), plan, "--data", shard,
                    "--steps", str(STEPS), "--backend", "cuda", "--out",
                    run_dir, "--config", config_path], check=True)
    rows = [json.loads(line)
            for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    return statistics.median(r["tokens_per_s"] for r in rows[WARMUP:])


def torch_tokens_per_s(config, batch, seq, compiled):
    params = {n: p.cuda().requires_grad_(True)
              for n, p in ref.random_parameters(config, seed=0).items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-4, fused=True)

    def loss_fn(tokens, targets):
        return ref.loss(config, params, tokens, targets, dtype=torch.bfloat16)

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--plans", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    card, peak = peak_flops()
    rows = []

    plans = sorted(p for p in os.listdir(args.plans)
                   if p.endswith(".json") and not p.endswith(".config.json"))
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
            kiln = subprocess.run(
                [os.path.join(args.bin, "kiln-gemm-bench"), str(m), str(n),
                 str(k)], check=True, capture_output=True, text=True)
            kiln_tflops = float(kiln.stdout.strip().splitlines()[-1].split()[4])
            a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            ms = time_cuda(lambda: torch.matmul(a, b.T))
            torch_tflops = 2 * m * n * k / (ms * 1e-3) / 1e12
            rows.append((f"GEMM {m}x{n}x{k} ({name})", "TFLOP/s",
                         kiln_tflops, torch_tflops, None))
        # Whole training steps.
        results = {}
        try:
            results["kiln"] = kiln_tokens_per_s(args.bin, plan, config_path,
                                                config["vocab_size"], args.out)
        except subprocess.CalledProcessError as error:
            print(f"kiln-run failed on {name}: {error}")
            results["kiln"] = float("nan")
        results["eager"] = torch_tokens_per_s(config, batch, seq, False)
        try:
            results["compile"] = torch_tokens_per_s(config, batch, seq, True)
        except Exception as error:  # noqa: BLE001 - report and go on
            print(f"torch.compile failed on {name}: {error}")
            results["compile"] = float("nan")
        rows.append((f"train step {name} (b{batch} x s{seq})", "tokens/s",
                     results["kiln"], results["eager"], results["compile"]))
        if peak:
            rows.append((f"MFU {name}", "%",
                         *(100 * 6 * n_params * results[k] / peak
                           for k in ("kiln", "eager", "compile"))))

    print(f"\nGPU benchmarks on {card}, torch {torch.__version__}; "
          f"medians; MFU against {peak and peak / 1e12} TFLOP/s dense BF16")
    print("| benchmark | unit | kiln | pytorch eager | torch.compile | "
          "kiln / eager |")
    print("|---|---|---|---|---|---|")
    for label, unit, kiln, eager, compiled in rows:
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        ratio = kiln / eager if eager else float("nan")
        print(f"| {label} | {unit} | {fmt(kiln)} | {fmt(eager)} | "
              f"{fmt(compiled)} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
