#!/usr/bin/env python3
"""Host tokens/s of data parallelism: one process against mpirun -np N,
with and without ZeRO-1 (--zero 1).

    bench/data_parallel.py [--config C] [--batch B] [--seq-len T]
                           [--ranks 2] [--steps 12] [--repeats 3]

Trains the same global batch (the tiny Llama by default, FP32) with one
process and with N ranks of `mpirun --oversubscribe` on the host backend,
alternating the runs so that both see the same machine load, and prints
each one's tokens/s (the median over steps of metrics.jsonl, the first two
steps left out, then the median over repeats) and the ratio. One process
uses every core through OpenMP; N ranks split the cores between them (Open
MPI binds each rank to its share), so on one machine the ratio measures
the cost of the reduction and of the smaller per-rank GEMMs, not a speed-up:
data parallelism pays across machines or GPUs. ZeRO-1 against ZeRO-0 on the
same ranks is the cost of sharding: a reduce-scatter and an all-gather
instead of one all-reduce, each rank updating 1/N of the parameters.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test" / "python"))
from compare_fusion import write_random_shard  # noqa: E402

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def tokens_per_second(out):
    rates = [json.loads(line)["tokens_per_s"]
             for line in open(os.path.join(out, "metrics.jsonl"))]
    return statistics.median(rates[2:] or rates)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kiln", default=str(ROOT / "build" / "bin" / "kiln"))
    parser.add_argument("--config", default=str(
        ROOT / "examples" / "configs" / "tiny-llama" / "config.json"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        args.workdir = work
        shard = write_random_shard(args)
        # (label, ranks, ZeRO stage)
        runs = [("1 rank", 1, 0), (f"{args.ranks} ranks", args.ranks, 0),
                (f"{args.ranks} ranks ZeRO-1", args.ranks, 1)]
        rates = {label: [] for label, _, _ in runs}
        for repeat in range(args.repeats):
            for label, ranks, zero in runs:
                out = os.path.join(work, f"run-{ranks}-{zero}")
                launch = MPIRUN + ["-np", str(ranks)] if ranks > 1 else []
                command = launch + [
                    args.kiln, "train", args.config, "--data", shard,
                    "--steps", str(args.steps), "--batch", str(args.batch),
                    "--seq-len", str(args.seq_len), "--precision", "fp32",
                    "--zero", str(zero), "--no-checkpoint", "--overwrite",
                    "--out", out]
                run = subprocess.run(command, capture_output=True, text=True)
                if run.returncode != 0:
                    sys.exit(f"{' '.join(command)} failed:\n{run.stderr}")
                rates[label].append(tokens_per_second(out))
    cores = os.cpu_count()
    print(f"host, {cores} cores, {Path(args.config).parent.name} FP32, "
          f"batch {args.batch} x {args.seq_len} tokens, {args.steps} steps, "
          f"{args.repeats} repeats")
    one = statistics.median(rates["1 rank"])
    for label, values in rates.items():
        median = statistics.median(values)
        print(f"  {label:16}: {median:10.0f} tok/s (runs: "
              f"{', '.join(f'{v:.0f}' for v in values)})  x{median / one:.2f}")

if __name__ == "__main__":
    main()
