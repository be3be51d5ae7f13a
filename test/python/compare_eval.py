"""Kiln's validation loss against PyTorch's, and evaluation that leaves
training alone.

usage: compare_eval.py KILN CONFIG WORKDIR [--batch B] [--seq-len T]
                       [--micro-batch M] [--ranks N] [--tolerance REL]
                       [--packing documents] [--fusion on|off]

Writes a training shard and a validation shard of random tokens and trains
4 steps in FP32 with --val-data, --eval-every 2 and --eval-tokens of two
batches, a checkpoint every 2 steps. Checks, each printed:
  - metrics.jsonl has val_loss (and val_perplexity = exp(val_loss)) on
    steps 2 and 4 only;
  - each val_loss equals PyTorch's mean cross-entropy (hf_reference.loss)
    of that step's checkpoint on the first two batches of the validation
    shard (the windows kiln's token stream reads: row r is tokens
    [r T, r T + T + 1)) within --tolerance relative;
  - the training losses and the final weights equal, bit for bit, those of
    the same run without evaluation (the forward-only steps share the
    step's memory and must not disturb it).
With --packing documents both runs pack (end-of-text: the vocabulary's last
id, which the random tokens never are, so that every row is a piece of one
long document and the windows are the same). With --ranks N the evaluated run is launched with mpirun -np N (each rank
evaluates its slice; the losses are summed over the ranks).
"""

import argparse
import json
import math
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference as ref  # noqa: E402
from compare_data_parallel import MPIRUN  # noqa: E402
from compare_packing import run  # noqa: E402


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kiln")
    parser.add_argument("config")
    parser.add_argument("workdir")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=0)
    parser.add_argument("--ranks", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--packing", default="")
    parser.add_argument("--fusion", default="on")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    config = json.load(open(args.config))
    vocab = config["vocab_size"]
    B, T = args.batch, args.seq_len

    rng = random.Random(3)
    train = [rng.randrange(vocab - 1) for _ in range(B * T * 8 + 1)]
    val = [rng.randrange(vocab - 1) for _ in range(B * T * 3 + 1)]
    train_shard = os.path.join(args.workdir, "train.bin")
    val_shard = os.path.join(args.workdir, "val.bin")
    ref.write_token_shard(train_shard, train)
    ref.write_token_shard(val_shard, val)

    def kiln_train(label, evaluate, ranks=1):
        out = os.path.join(args.workdir, label)
        command = [args.kiln, "train", args.config, "--data", train_shard,
                   "--steps", "4", "--batch", str(B), "--seq-len", str(T),
                   "--precision", "fp32", "--seed", "7", "--save-every", "2",
                   "--keep", "0", "--fusion=" + args.fusion, "--overwrite",
                   "--out", out]
        if args.packing:
            command += ["--packing", args.packing, "--eot", str(vocab - 1)]
        if args.micro_batch:
            command += ["--micro-batch", str(args.micro_batch)]
        if evaluate:
            command += ["--val-data", val_shard, "--eval-every", "2",
                        "--eval-tokens", str(2 * B * T)]
        if ranks > 1:
            command = MPIRUN + ["-np", str(ranks)] + command
        return out, run(command)

    evaluated, log = kiln_train("evaluated", True, args.ranks)
    plain, _ = kiln_train("plain", False)
    ok = True

    records = metrics(evaluated)
    steps = [r["step"] for r in records if "val_loss" in r]
    print(f"val_loss on steps {steps}")
    if steps != [2, 4]:
        print("FAIL val_loss should be on steps 2 and 4")
        ok = False
    for line in log.splitlines():
        if "val loss" in line:
            print(line.split(" | ")[-1].strip())

    # The reference: the checkpoint's weights on the validation windows.
    rows = [val[r * T:r * T + T + 1] for r in range(2 * B)]
    windows = torch.tensor(rows, dtype=torch.long)
    worst = 0.0
    for record in records:
        if "val_loss" not in record:
            continue
        step = record["step"]
        params = ref.read_safetensors(os.path.join(
            evaluated, f"checkpoint-{step:06d}", "model.safetensors"))
        with torch.no_grad():
            expected = ref.loss(config, params, windows[:, :-1],
                                windows[:, 1:]).item()
        error = abs(record["val_loss"] - expected) / abs(expected)
        worst = max(worst, error)
        ppl = record["val_perplexity"]
        if not math.isclose(ppl, math.exp(record["val_loss"]), rel_tol=1e-12):
            print(f"FAIL step {step}: val_perplexity {ppl} is not "
                  f"exp(val_loss)")
            ok = False
        if error > args.tolerance:
            print(f"FAIL step {step}: val_loss {record['val_loss']} vs "
                  f"torch {expected} (relative {error:.2e})")
            ok = False
    if worst <= args.tolerance:
        print(f"val_loss vs torch within {args.tolerance:g}")
    print(f"(worst relative difference {worst:.1e})", file=sys.stderr)

    if args.ranks == 1:
        losses = [r["loss"] for r in records]
        plain_losses = [r["loss"] for r in metrics(plain)]
        final = "checkpoint-000004/model.safetensors"
        same_weights = (
            open(os.path.join(evaluated, final), "rb").read() ==
            open(os.path.join(plain, final), "rb").read())
        if losses == plain_losses and same_weights:
            print("training with evaluation equals training without: "
                  "losses and weights bitwise")
        else:
            print(f"FAIL evaluation changed training: {losses} vs "
                  f"{plain_losses}, weights equal: {same_weights}")
            ok = False
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
