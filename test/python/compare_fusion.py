"""Trains the same steps with --fusion=on and --fusion=off and compares them.

usage: compare_fusion.py KILN CONFIG WORKDIR [--precision fp32|bf16] [--baseline FLAG]
                         [--batch B] [--seq-len T] [--steps N]
                         [--tolerance REL] [--update-tolerance REL]

Both runs start from the same seed and read the same token shard. The first
step's loss and gradients (--save-grads) and the weights and AdamW moments
after N steps (the final checkpoint) must be bitwise equal: on the host a
fused region runs the unfused ops' per-row functions in the same order and
rounds where they store. With --tolerance, a tensor that is not bitwise
equal may differ by that relative error (||a - b|| / ||b||): for BF16 steps,
where fusion keeps weight gradients in FP32 instead of rounding them to
BF16, and for packed projections (nn-pack-projections), whose GEMM sums
the projections' input gradients in another order. --update-tolerance
(default: --tolerance) applies to the weights and moments after the steps:
AdamW's update g / (|g| + eps) magnifies a difference in a gradient element
near zero by up to 1 / eps. With --max-relative (the step-1 gradients) and
--model-max-relative (the model and moments), a tensor that is not bitwise
equal may differ by max|a - b| / max|b| up to that bound, and the report
names the tensors that do: for FP32 steps whose LM-head weight gradient
the linear-cross-entropy group sums chunk by chunk (another summation
order). --skip-model leaves the weights out (the moments are still
compared): in BF16 AdamW's first update, lr g / (|g| + eps), is lr times
the sign of every gradient element well above eps, so a rounding point
fewer flips the update of elements that are rounding noise around zero
(GPT-2's K biases, whose gradient is zero in exact arithmetic), while the
moments, smooth in g, stay within the tolerance. The fused plan must also
have fewer steps, or the comparison would prove nothing. --baseline
replaces --fusion=off by other flags: --fuse-options=... compares one
nn-fuse group on and off. Standard library only.
"""

import argparse
import json
import os
import random
import struct
import subprocess
import sys


def write_token_shard(path, tokens):
    """llm.c's format: 256 int32 header (magic, version, count), uint16."""
    header = [20240520, 1, len(tokens)] + [0] * 253
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack(f"<{len(tokens)}H", *tokens))


def write_random_shard(args):
    """A shard of random tokens of the config's vocabulary, enough for
    args.steps batches of args.batch x args.seq_len; returns its path."""
    os.makedirs(args.workdir, exist_ok=True)
    vocab = json.load(open(args.config))["vocab_size"]
    rng = random.Random(7)
    shard = os.path.join(args.workdir, "tokens.bin")
    tokens = args.batch * args.seq_len * (args.steps + 1) + 1
    write_token_shard(shard, [rng.randrange(vocab) for _ in range(tokens)])
    return shard


def read_tensors(path):
    """name -> (dtype, shape, raw bytes) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        tensors[name] = (entry["dtype"], entry["shape"], data[begin:end])
    return tensors


def floats(dtype, raw):
    if dtype == "F32":
        return struct.unpack(f"<{len(raw) // 4}f", raw)
    if dtype == "BF16":
        bits = struct.unpack(f"<{len(raw) // 2}H", raw)
        return struct.unpack(f"<{len(bits)}f",
                             struct.pack(f"<{len(bits)}I",
                                         *(b << 16 for b in bits)))
    return None


def relative_error(dtype, a, b):
    x, y = floats(dtype, a), floats(dtype, b)
    if x is None:
        return float("inf")
    diff = sum((p - q) ** 2 for p, q in zip(x, y)) ** 0.5
    norm = sum(q * q for q in y) ** 0.5
    return diff / norm if norm else (0.0 if diff == 0 else float("inf"))


def max_relative_error(dtype, a, b):
    x, y = floats(dtype, a), floats(dtype, b)
    if x is None:
        return float("inf")
    diff = max(abs(p - q) for p, q in zip(x, y))
    scale = max(abs(q) for q in y)
    return diff / scale if scale else (0.0 if diff == 0 else float("inf"))


def compare(label, fused_path, unfused_path, tolerance, max_relative=0.0):
    fused, unfused = read_tensors(fused_path), read_tensors(unfused_path)
    failures = []
    exact, worst = 0, 0.0
    differing = []
    if sorted(fused) != sorted(unfused):
        failures.append(f"{label}: tensor names differ: "
                        f"{sorted(set(fused) ^ set(unfused))}")
    for name in sorted(set(fused) & set(unfused)):
        if fused[name][:2] != unfused[name][:2]:
            failures.append(f"{label}: {name}: dtype/shape {fused[name][:2]} "
                            f"vs {unfused[name][:2]}")
        elif fused[name][2] == unfused[name][2]:
            exact += 1
        elif max_relative:
            a, b = fused[name][2], unfused[name][2]
            error = max_relative_error(fused[name][0], a, b)
            worst = max(worst, error)
            differing.append(name)
            if error > max_relative:
                failures.append(f"{label}: {name}: max-relative error "
                                f"{error:.2e} > {max_relative:g}")
        else:
            a, b = fused[name][2], unfused[name][2]
            error = relative_error(fused[name][0], a, b) if tolerance else 0
            worst = max(worst, error)
            if not tolerance or error > tolerance:
                first = next(i for i in range(len(a)) if a[i] != b[i])
                failures.append(f"{label}: {name}: bytes differ (first at "
                                f"byte {first}), relative error {error:.2e}")
    for failure in failures:
        print("FAIL", failure)
    if exact == len(fused):
        print(f"{label}: {len(fused)} tensors bitwise equal")
    elif max_relative:
        print(f"{label}: {len(fused)} tensors, {exact} bitwise equal, the "
              f"rest within {max_relative:g} max-relative (worst "
              f"{worst:.2e}): {', '.join(differing)}")
    else:
        print(f"{label}: {len(fused)} tensors, {exact} bitwise equal, worst "
              f"relative error {worst:.2e} (tolerance {tolerance:g})")
    return not failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kiln")
    parser.add_argument("config")
    parser.add_argument("workdir")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.0)
    parser.add_argument("--update-tolerance", type=float, default=None)
    parser.add_argument("--max-relative", type=float, default=0.0)
    parser.add_argument("--model-max-relative", type=float, default=0.0)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--baseline", default="--fusion=off",
                        help="the flags of the run to compare with (default "
                        "--fusion=off; e.g. --fuse-options=... to compare "
                        "one nn-fuse group on and off)")
    args = parser.parse_args()

    shard = write_random_shard(args)

    runs = {}
    for fusion in ("on", "off"):
        out = os.path.join(args.workdir, f"fusion-{fusion}")
        grads = os.path.join(args.workdir, f"grads-{fusion}.safetensors")
        run = subprocess.run([args.kiln, "train", args.config, "--data",
                              shard, "--steps", str(args.steps), "--batch",
                              str(args.batch), "--seq-len", str(args.seq_len),
                              "--precision", args.precision, "--seed", "11",
                              "--fusion=on" if fusion == "on"
                              else args.baseline, "--save-grads", grads,
                              "--out", out, "--overwrite"],
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"kiln train ({'--fusion=on' if fusion == 'on' else args.baseline}) "
                     f"failed:\n{run.stderr}")
        plan = json.load(open(os.path.join(out, "plan.json")))
        checkpoint = os.path.join(out, f"checkpoint-{args.steps:06d}")
        views = sum("row_stride" in value for value in plan["values"])
        runs[fusion] = (len(plan["steps"]), grads, checkpoint, views)

    fused_steps, unfused_steps = runs["on"][0], runs["off"][0]
    print(f"plan steps: {fused_steps} fused, {unfused_steps} unfused")
    print(f"row-strided views: {runs['on'][3]} fused, {runs['off'][3]} "
          "unfused")
    ok = fused_steps < unfused_steps
    if not ok:
        print("FAIL the fused plan has no fewer steps")
    ok &= compare("loss and gradients of step 1", runs["on"][1],
                  runs["off"][1], args.tolerance, args.max_relative)
    for part in ("model", "optimizer"):
        if part == "model" and args.skip_model:
            print(f"model after step {args.steps}: not compared "
                  "(--skip-model)")
            continue
        ok &= compare(f"{part} after step {args.steps}",
                      os.path.join(runs["on"][2], f"{part}.safetensors"),
                      os.path.join(runs["off"][2], f"{part}.safetensors"),
                      args.tolerance if args.update_tolerance is None
                      else args.update_tolerance, args.model_max_relative)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
