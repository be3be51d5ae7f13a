#!/usr/bin/env python3
"""The host backend's fused-region share of a training step, before and after.

Trains a few steps of a plan on the host backend with KILN_PROFILE=1 under two
kiln-run binaries (e.g. one built at an older commit and the current one),
alternating them so that both see the same machine load, and prints for each
the fused steps' share of the host kernel time and the tokens per second
(median and spread over the repeats), then the ratios.

    bench/host_step_profile.py --before /tmp/base/bin/kiln-run \\
        --after build/bin/kiln-run --kiln build/bin/kiln

The plan is compiled once by --kiln (GPT-2 124M, FP32, batch 4 x 64 by
default). A runtime that reads an older plan version gets a copy with that
version (--before-version): the other fields a version adds are ignored by
the older reader. OMP_NUM_THREADS is --threads (2).
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


def run_once(kiln_run, plan, data, steps, threads, out):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), KILN_PROFILE="1")
    proc = subprocess.run(
        [kiln_run, plan, "--data", data, "--steps", str(steps), "--out", out,
         "--overwrite", "--backend", "host"],
        env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kiln_run} failed:\n{proc.stderr}")
    rates, fused, total = [], 0.0, 0.0
    for line in proc.stderr.splitlines():
        if m := re.match(r"step (\d+)/\d+ .* ([\d.]+) tok/s", line):
            if int(m.group(1)) > 1:  # the first step warms caches and pages
                rates.append(float(m.group(2)))
        elif m := re.match(r"\s+[\d.]+%\s+([\d.]+)s\s+(\S+)", line):
            secs = float(m.group(1))
            total += secs
            if m.group(2).startswith("fused"):
                fused += secs
    if not total or not rates:
        sys.exit(f"no profile in the output of {kiln_run}:\n{proc.stderr}")
    return fused / total, statistics.mean(rates)


def summary(values):
    return (f"median {statistics.median(values):.3g} "
            f"(min {min(values):.3g}, max {max(values):.3g})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="kiln-run before")
    parser.add_argument("--after", required=True, help="kiln-run after")
    parser.add_argument("--kiln", default=str(ROOT / "build/bin/kiln"))
    parser.add_argument("--config",
                        default=str(ROOT / "examples/configs/gpt2-small/"
                                    "config.json"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before-version", type=int, default=1,
                        help="plan version the --before runtime reads")
    parser.add_argument("--keep", action="store_true",
                        help="keep the plans and runs (checkpoints of GPT-2 "
                        "take gigabytes)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kiln-host-profile-"))
    plan = work / "plan.json"
    subprocess.run([args.kiln, "compile", args.config, "--batch",
                    str(args.batch), "--seq-len", str(args.seq_len),
                    "--precision", args.precision, "-o", str(plan)],
                   check=True)
    old = json.loads(plan.read_text())
    old["version"] = args.before_version
    old_plan = work / "plan-before.json"
    old_plan.write_text(json.dumps(old))
    data = work / "data.bin"
    subprocess.run([args.kiln, "tokenize",
                    str(ROOT / "examples/data/prideprejudice.txt"), "-o",
                    str(data)], check=True, capture_output=True)

    results = {"before": ([], []), "after": ([], [])}
    for i in range(args.repeats):
        for name, binary, p in (("before", args.before, old_plan),
                                ("after", args.after, plan)):
            share, rate = run_once(binary, str(p), str(data), args.steps,
                                   args.threads, str(work / f"run-{name}"))
            results[name][0].append(share)
            results[name][1].append(rate)
            print(f"run {i + 1} {name:6}: fused share {100 * share:5.1f}%  "
                  f"{rate:6.1f} tok/s", flush=True)
    for name, (shares, rates) in results.items():
        print(f"{name:6}: fused share {summary([100 * s for s in shares])} %;"
              f" tokens/s {summary(rates)}")
    before = statistics.median(results["before"][0])
    after = statistics.median(results["after"][0])
    speed = (statistics.median(results["after"][1]) /
             statistics.median(results["before"][1]))
    print(f"fused share before/after: {before / after:.2f}x; tokens/s "
          f"after/before: {speed:.2f}x")
    if args.keep:
        print(f"plans and runs: {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
