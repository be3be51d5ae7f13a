#!/usr/bin/env python3
"""What nn-fuse buys: kernels per step and host step time, unfused vs fused.

    bench/fusion.py kernels              # the kernel table of examples/
    bench/fusion.py host [--config C] [--precision fp32] [--torch]

`kernels` compiles each example model with --fusion=off and --fusion=on
(`kiln inspect --json`, nothing runs) and prints kernels per step, per layer
(forward; backward with weight gradients), the optimizer's, the predicted
bytes moved (every kernel reads its operands once and writes its results
once: a prediction) and the planned peak memory, split into what persists
across steps (parameters, moments, the fused step's BF16 compute copies)
and the peak of the step's temporaries, against the goals of the fusion
issue.

`host` compiles one plan each way with the same kiln and trains a few steps
of each with kiln-run on the host backend under KILN_PROFILE=1, alternating
them so that both see the same machine load, and prints for each the GEMM
share of the host kernel time (KILN_PROFILE's summary) and tokens/s (median
and spread over the repeats, the first step of each run left out), then the
ratios. With --torch, PyTorch eager (bench/host_vs_torch.py's FP32
implementation) trains the same shape in the same run.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "examples" / "configs"

# name, batch, seq_len, precision; goals (forward, backward) per layer.
MODELS = [
    ("tiny-llama", 4, 64, "bf16", (8, 16)),
    ("gpt2-small", 4, 64, "fp32", (6, 14)),
    ("gpt2-small", 4, 64, "bf16", (6, 14)),
    ("llama-1b", 1, 2048, "bf16", (8, 16)),
    ("llama-3-8b", 1, 8192, "bf16", (8, 16)),
]


def inspect(kiln, config, batch, seq_len, precision, fusion):
    proc = subprocess.run(
        [kiln, "inspect", str(config), "--json", "--batch", str(batch),
         "--seq-len", str(seq_len), "--precision", precision,
         f"--fusion={fusion}"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"kiln inspect {config} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def kernels(args):
    print("kernels per step, unfused -> fused (kiln inspect --json; "
          "bytes moved are predictions)")
    header = (f"{'model':<11} {'shape':<13} {'prec':<5} {'step':>11} "
              f"{'fwd/layer':>10} {'bwd/layer':>10} {'optimizer':>10} "
              f"{'bytes moved':>15} {'peak memory':>17} "
              f"{'persistent':>17} {'transient':>16}  goal fwd/bwd")
    print(header)
    print("-" * len(header))
    for name, batch, seq_len, precision, goal in MODELS:
        config = CONFIGS / name / "config.json"
        off = inspect(args.kiln, config, batch, seq_len, precision, "off")
        on = inspect(args.kiln, config, batch, seq_len, precision, "on")

        def pair(key, sub=None):
            a = off[key] if sub is None else off[key][sub]
            b = on[key] if sub is None else on[key][sub]
            return f"{a}->{b}"

        def gib(key):
            return (f"{off[key] / 2**30:.2f}->{on[key] / 2**30:.2f}G")

        def transient(plan):
            return plan["peak_memory_bytes"] - plan["persistent_memory_bytes"]

        fwd, bwd = on["kernels_per_layer"]["forward"], \
            on["kernels_per_layer"]["backward"]
        met = "met" if fwd <= goal[0] and bwd <= goal[1] else "not yet"
        print(f"{name:<11} {f'{batch}x{seq_len}':<13} {precision:<5} "
              f"{pair('kernels_per_step'):>11} "
              f"{pair('kernels_per_layer', 'forward'):>10} "
              f"{pair('kernels_per_layer', 'backward'):>10} "
              f"{pair('kernels_optimizer'):>10} "
              f"{gib('predicted_bytes_moved_per_step'):>15} "
              f"{gib('peak_memory_bytes'):>17} "
              f"{gib('persistent_memory_bytes'):>17} "
              f"{transient(off) / 2**30:>8.2f}->{transient(on) / 2**30:.2f}G"
              f"  <= {goal[0]}/{goal[1]} ({met})", flush=True)


def profile_run(kiln_run, plan, data, steps, threads, out):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), KILN_PROFILE="1")
    proc = subprocess.run(
        [kiln_run, str(plan), "--data", str(data), "--steps", str(steps),
         "--out", str(out), "--overwrite", "--backend", "host",
         "--no-checkpoint"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kiln_run} failed:\n{proc.stderr}")
    rates, gemm, total = [], 0.0, 0.0
    for line in proc.stderr.splitlines():
        if m := re.match(r"step (\d+)/\d+ .* ([\d.]+)(k?) tok/s", line):
            if int(m.group(1)) > 1:  # the first step warms caches and pages
                rates.append(float(m.group(2)) * (1000 if m.group(3) else 1))
        elif m := re.match(r"\s+[\d.]+%\s+([\d.]+)s\s+(\S+)", line):
            total += float(m.group(1))
            if m.group(2) == "gemm":
                gemm += float(m.group(1))
    if not total or not rates:
        sys.exit(f"no profile in the output of {kiln_run}:\n{proc.stderr}")
    return gemm / total, statistics.median(rates)


def summary(values, unit=""):
    return (f"median {statistics.median(values):.4g}{unit} "
            f"(min {min(values):.4g}, max {max(values):.4g})")


def host(args):
    work = Path(tempfile.mkdtemp(prefix="kiln-fusion-bench-"))
    data = work / "data.bin"
    subprocess.run([args.kiln, "tokenize",
                    str(ROOT / "examples/data/prideprejudice.txt"), "-o",
                    str(data)], check=True, capture_output=True)
    plans = {}
    for fusion in ("off", "on"):
        plans[fusion] = work / f"plan-{fusion}.json"
        subprocess.run([args.kiln, "compile", args.config, "--batch",
                        str(args.batch), "--seq-len", str(args.seq_len),
                        "--precision", args.precision, f"--fusion={fusion}",
                        "-o", str(plans[fusion])], check=True,
                       capture_output=True)
    results = {"off": ([], []), "on": ([], [])}
    for i in range(args.repeats):
        for fusion in ("off", "on"):
            share, rate = profile_run(args.kiln_run, plans[fusion], data,
                                      args.steps, args.threads,
                                      work / f"run-{fusion}")
            results[fusion][0].append(share)
            results[fusion][1].append(rate)
            print(f"run {i + 1} fusion {fusion:3}: GEMM share "
                  f"{100 * share:5.1f}%  {rate:8.1f} tok/s", flush=True)
    config = json.load(open(args.config))
    print(f"{config['architectures'][0]} ({args.config}), {args.precision}, "
          f"batch {args.batch} x {args.seq_len}, {args.threads} threads, "
          f"{args.steps} steps per run ({args.steps - 1} timed), "
          f"{args.repeats} runs each")
    for fusion, (shares, rates) in results.items():
        print(f"  kiln --fusion={fusion:3}: GEMM share "
              f"{summary([100 * s for s in shares], '%')}; tokens/s "
              f"{summary(rates)}")
    speed = (statistics.median(results["on"][1]) /
             statistics.median(results["off"][1]))
    print(f"  tokens/s fused / unfused: {speed:.2f}x")
    if args.torch:
        sys.path.insert(0, str(ROOT / "bench"))
        import host_vs_torch  # noqa: E402  (imports torch)
        import torch  # noqa: E402
        torch.set_num_threads(args.threads)
        n = (args.steps * args.repeats + 4) * args.batch * args.seq_len + 1
        tokens = torch.randint(0, config["vocab_size"], (n,),
                               generator=torch.Generator().manual_seed(0))
        rate, _ = host_vs_torch.torch_tokens_per_s(
            config, args.batch, args.seq_len,
            max(args.steps * args.repeats, host_vs_torch.WARMUP + 2),
            tokens.tolist())
        print(f"  pytorch eager (fp32, torch {torch.__version__}): "
              f"{rate:.1f} tok/s; kiln fused / pytorch: "
              f"{statistics.median(results['on'][1]) / rate:.2f}x")
    shutil.rmtree(work)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("kernels", "host"):
        p = sub.add_parser(name)
        p.add_argument("--kiln", default=str(ROOT / "build/bin/kiln"))
    p = sub.choices["host"]
    p.add_argument("--kiln-run", default=str(ROOT / "build/bin/kiln-run"))
    p.add_argument("--config", default=str(CONFIGS / "gpt2-small" /
                                           "config.json"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--torch", action="store_true",
                   help="also PyTorch eager, same shape, same run")
    args = parser.parse_args()
    (kernels if args.command == "kernels" else host)(args)


if __name__ == "__main__":
    main()
