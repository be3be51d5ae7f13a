"""Trains one global batch on several data-parallel ranks and in one process.

usage: compare_data_parallel.py KILN CONFIG WORKDIR --ranks N --batch B
                                [--micro-batch M] [--seq-len T] [--steps S]
                                [--tolerance REL] [--update-tolerance REL]
                                [--resume-at K] [--bucket-mb MIB]

Three runs from the same seed on the same token shard, in FP32:
  dp      mpirun -np N kiln train (each rank B / N sequences, in micro-
          batches of M when given): the gradients summed by all_reduce;
  split   one process in as many micro-batches of the same size (the same
          partial gradients, summed in rank order instead of by MPI);
  whole   one process, one batch of B.
The first step's loss and gradients (--save-grads: rank 0 writes the
reduced gradients) and the weights and AdamW moments after S steps of dp
must equal split bitwise when --tolerance-split is 0 (two ranks: the sum of
two partial gradients is one addition either way; every process runs one
OpenMP thread, as the host kernels' sums depend on the thread count) or
within it, and whole within --tolerance. With --resume-at K, dp also trains to step K, stops,
and resumes to S under mpirun: the checkpoint must equal the straight run
bitwise. The dp plan must hold all_reduce steps over N ranks, or the
comparison would prove nothing. Standard library only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_fusion import compare, write_random_shard  # noqa: E402

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
# One OpenMP thread in every process: the host kernels' reductions split
# their sums by thread, so results are bitwise comparable only at one
# thread count (mpirun gives each rank one core anyway).
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def train(args, shard, label, launch, extra):
    out = os.path.join(args.workdir, label)
    grads = os.path.join(args.workdir, f"grads-{label}.safetensors")
    command = launch + [args.kiln, "train", args.config, "--data", shard,
                        "--steps", str(args.steps), "--batch",
                        str(args.batch), "--seq-len", str(args.seq_len),
                        "--precision", "fp32", "--seed", "11",
                        "--save-grads", grads, "--overwrite",
                        "--out", out] + extra
    run = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if run.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{run.stdout}{run.stderr}")
    plan = json.load(open(os.path.join(out, "plan.json")))
    checkpoint = os.path.join(out, f"checkpoint-{args.steps:06d}")
    return plan, grads, checkpoint


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kiln")
    parser.add_argument("config")
    parser.add_argument("workdir")
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--micro-batch", type=int, default=0)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--tolerance-split", type=float, default=0.0)
    parser.add_argument("--update-tolerance", type=float, default=None)
    parser.add_argument("--resume-at", type=int, default=0)
    parser.add_argument("--bucket-mb", type=float, default=0)
    args = parser.parse_args()

    shard = write_random_shard(args)
    micro = args.micro_batch or args.batch // args.ranks
    per_rank = args.batch // args.ranks // micro
    dp = train(args, shard, "dp", MPIRUN + ["-np", str(args.ranks)],
               ["--micro-batch", str(micro)] +
               (["--save-every", str(args.resume_at)] if args.resume_at else
                []) +
               (["--bucket-mb", str(args.bucket_mb)] if args.bucket_mb else
                []))
    split = train(args, shard, "split", [],
                  ["--micro-batch", str(micro)])
    whole = train(args, shard, "whole", [], [])

    plan = dp[0]
    reduces = [s for s in plan["steps"] if s["kernel"] == "all_reduce"]
    reduced = {o for s in reduces for o in s["outputs"]}
    print(f"data_parallel: {plan['model'].get('data_parallel')} ranks, "
          f"micro_batches {plan['model']['micro_batches']} of "
          f"{plan['model']['batch']} per rank; all_reduce steps: "
          f"{len(reduces)}, last_micro_step "
          f"{sorted({s['attrs']['last_micro_step'] for s in reduces})}")
    ok = (plan["model"].get("data_parallel") == args.ranks and
          plan["model"]["micro_batches"] == per_rank and reduces and
          all(s["attrs"]["group_size"] == args.ranks for s in reduces) and
          all(p["grad"] in reduced for p in plan["parameters"]))
    if not ok:
        print("FAIL the data-parallel plan does not reduce every gradient "
              "over the ranks")
    update = (args.update_tolerance if args.update_tolerance is not None
              else args.tolerance)
    for label, other, grad_tolerance, update_tolerance in (
            ("one process, micro-batches", split, args.tolerance_split,
             args.tolerance_split),
            ("one process, one batch", whole, args.tolerance, update)):
        ok &= compare(f"{label}: loss and gradients of step 1", dp[1],
                      other[1], grad_tolerance)
        for part in ("model", "optimizer"):
            ok &= compare(f"{label}: {part} after step {args.steps}",
                          os.path.join(dp[2], f"{part}.safetensors"),
                          os.path.join(other[2], f"{part}.safetensors"),
                          update_tolerance)

    if args.resume_at:
        # The straight run saved a checkpoint at --resume-at: resume from
        # it into another directory and train to the end again.
        resumed = os.path.join(args.workdir, "resumed")
        shutil.rmtree(resumed, ignore_errors=True)
        command = MPIRUN + ["-np", str(args.ranks), args.kiln, "train",
                            args.config, "--resume",
                            os.path.join(args.workdir, "dp",
                                         f"checkpoint-{args.resume_at:06d}"),
                            "--out", resumed]
        run = subprocess.run(command, capture_output=True, text=True,
                             env=ENV)
        if run.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{run.stdout}{run.stderr}")
        for part in ("model", "optimizer"):
            ok &= compare(f"resumed at step {args.resume_at}: {part} after "
                          f"step {args.steps}",
                          os.path.join(resumed, f"checkpoint-{args.steps:06d}",
                                       f"{part}.safetensors"),
                          os.path.join(dp[2], f"{part}.safetensors"), 0.0)
        curve = lambda path: [json.loads(line)["loss"] for line in open(
            os.path.join(path, "metrics.jsonl"))]
        straight = curve(os.path.join(args.workdir, "dp"))[args.resume_at:]
        same = curve(resumed) == straight
        print(f"resumed loss curve {'equals' if same else 'differs from'} "
              f"the straight run's (steps {args.resume_at + 1}-{args.steps})")
        ok &= same
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
