"""Trains one global batch whole and in micro-batches and compares them.

usage: compare_micro_batches.py KILN CONFIG WORKDIR --batch B --micro-batch M
                                [--precision fp32] [--seq-len T] [--steps N]
                                [--tolerance REL]

Both runs start from the same seed and read the same token shard. The
first step's loss and gradients (--save-grads: with micro-batches the
accumulated gradients) and the weights and AdamW moments after N steps must
agree within --tolerance relative error (||a - b|| / ||b|| per tensor,
default 1e-6): the accumulated gradient sums the micro-batches' in another
order than the GEMMs of one batch do. The micro-batched plan must hold a
grad_accumulate step and the tokens of a micro-batch, or the comparison
would prove nothing. Standard library only.
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_fusion import compare, write_random_shard  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kiln")
    parser.add_argument("config")
    parser.add_argument("workdir")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--micro-batch", type=int, required=True)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--max-relative", type=float, default=0.0)
    parser.add_argument("--update-tolerance", type=float, default=None)
    args = parser.parse_args()

    shard = write_random_shard(args)

    runs = {}
    for label, extra in (("micro", ["--micro-batch", str(args.micro_batch)]),
                         ("whole", [])):
        out = os.path.join(args.workdir, label)
        grads = os.path.join(args.workdir, f"grads-{label}.safetensors")
        run = subprocess.run([args.kiln, "train", args.config, "--data",
                              shard, "--steps", str(args.steps), "--batch",
                              str(args.batch), "--seq-len", str(args.seq_len),
                              "--precision", args.precision, "--seed", "11",
                              "--save-grads", grads, "--out", out,
                              "--overwrite"] + extra,
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"kiln train ({label}) failed:\n{run.stderr}")
        plan = json.load(open(os.path.join(out, "plan.json")))
        checkpoint = os.path.join(out, f"checkpoint-{args.steps:06d}")
        runs[label] = (plan, grads, checkpoint)

    micro_plan, whole_plan = runs["micro"][0], runs["whole"][0]
    kernels = lambda plan: sum(s["kernel"] == "grad_accumulate"
                               for s in plan["steps"])
    print(f"micro_batches: {micro_plan['model']['micro_batches']} of "
          f"{micro_plan['model']['batch']} sequences, against 1 of "
          f"{whole_plan['model']['batch']}")
    print(f"grad_accumulate steps: {kernels(micro_plan)} micro-batched, "
          f"{kernels(whole_plan)} whole")
    ok = (micro_plan["model"]["micro_batches"] ==
          args.batch // args.micro_batch and kernels(micro_plan) == 1 and
          kernels(whole_plan) == 0)
    if not ok:
        print("FAIL the plans do not split the batch as asked")
    ok &= compare("loss and gradients of step 1", runs["micro"][1],
                  runs["whole"][1], args.tolerance, args.max_relative)
    update = (args.update_tolerance if args.update_tolerance is not None
              else args.tolerance)
    for part in ("model", "optimizer"):
        ok &= compare(f"{part} after step {args.steps}",
                      os.path.join(runs["micro"][2], f"{part}.safetensors"),
                      os.path.join(runs["whole"][2], f"{part}.safetensors"),
                      update)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
