"""Trains one step with Kiln and compares its loss and every parameter
gradient with PyTorch's, from the same weights and batch.

usage: compare_with_torch.py KILN CONFIG WORKDIR --precision fp32|bf16
                             --tolerance REL
Prints one line per tensor and exits non-zero if any relative error
||g_kiln - g_torch|| / ||g_torch|| exceeds the tolerance.
"""

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import hf_reference as ref  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kiln")
    parser.add_argument("config")
    parser.add_argument("workdir")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--tolerance", type=float, required=True)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=16)
    args = parser.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    config = json.load(open(args.config))
    params = ref.random_parameters(config, seed=1234)
    init = os.path.join(args.workdir, "init.safetensors")
    ref.write_safetensors(init, params)
    generator = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, config["vocab_size"], (4096,),
                           generator=generator)
    shard = os.path.join(args.workdir, "tokens.bin")
    ref.write_token_shard(shard, tokens.tolist())

    grads_path = os.path.join(args.workdir, "grads.safetensors")
    subprocess.run([args.kiln, "train", args.config, "--data", shard,
                    "--steps", "1", "--batch", str(args.batch),
                    "--seq-len", str(args.seq_len),
                    "--precision", args.precision, "--init", init,
                    "--save-grads", grads_path,
                    "--out", os.path.join(args.workdir, "out")],
                   check=True)
    kiln = ref.read_safetensors(grads_path)

    leaves = {name: p.clone().requires_grad_(True)
              for name, p in params.items()}
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    loss = ref.loss(config, leaves, kiln["input_ids"].long(),
                    kiln["targets"].long(), dtype=dtype)
    loss.backward()

    worst = 0.0
    failures = []
    loss_error = abs(kiln["loss"].item() - loss.item()) / abs(loss.item())
    print(f"loss: kiln {kiln['loss'].item():.6f} torch {loss.item():.6f} "
          f"rel {loss_error:.2e}")
    if loss_error > args.tolerance:
        failures.append("loss")
    for name, leaf in leaves.items():
        if name not in kiln:
            failures.append(f"{name} (missing)")
            continue
        expected = leaf.grad.double()
        actual = kiln[name].double()
        error = ((actual - expected).norm() / expected.norm()).item()
        worst = max(worst, error)
        flag = "FAIL" if error > args.tolerance else "ok"
        print(f"{flag:4} {name:50} rel {error:.2e}")
        if error > args.tolerance:
            failures.append(name)
    print(f"{len(leaves)} gradients, worst relative error {worst:.2e}, "
          f"tolerance {args.tolerance:.0e} ({args.precision})")
    if failures:
        print("FAILED: " + ", ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
