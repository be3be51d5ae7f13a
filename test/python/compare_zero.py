"""ZeRO-1 against ZeRO-0 under data parallelism, and re-sharding on resume.

usage: compare_zero.py KILN CONFIG WORKDIR --ranks N --batch B [--seq-len T]
                       [--steps S] --resume-at K [--reshard RANKS:TOL ...]
                       [--tolerance REL] [--backend host|cuda]

From the same seed and token shard, in FP32 (--precision), every process with one OpenMP
thread (the host kernels' sums depend on the thread count):
  zero0   mpirun -np N kiln train --zero 0
  zero1   mpirun -np N kiln train --zero 1, saving at step K
Checks, each printed:
  - the zero1 plan reduce-scatters every gradient, shards every update and
    the norm over N, and gathers every parameter (else nothing is tested);
  - its checkpoint holds the manifest and one shard file per rank, rank r's
    holding the elements from r * ceil(n / N) of every moment;
  - step 1's loss and gradients (--save-grads: gathered on rank 0), the
    model and the moments after S steps (the ranks' shards joined) equal
    zero0's within --tolerance (0: bitwise);
  - zero1 resumed at K on N ranks (no --zero: the checkpoint's) equals the
    straight run bitwise;
  - zero0's checkpoint at K resumed with --zero 1 equals zero1 straight
    within --tolerance (the full moments cut into shards);
  - for each --reshard M:TOL, zero1's checkpoint at K resumed on M ranks
    (--zero 1; one process when M is 1, which shards nothing) with the same
    micro-batches of B / N sequences where they fit, equals zero1 straight
    within TOL (0: bitwise).
Standard library only.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_fusion import compare, read_tensors, write_random_shard  # noqa

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _count(shape):
    count = 1
    for dim in shape:
        count *= dim
    return count


def run(command):
    done = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def launch(ranks):
    return MPIRUN + ["-np", str(ranks)] if ranks > 1 else []


def train(args, shard, label, ranks, extra):
    out = os.path.join(args.workdir, label)
    grads = os.path.join(args.workdir, f"grads-{label}.safetensors")
    run(launch(ranks) + [
        args.kiln, "train", args.config, "--data", shard, "--steps",
        str(args.steps), "--batch", str(args.batch), "--seq-len",
        str(args.seq_len), "--precision", args.precision, "--seed", "11",
        "--save-every", str(args.resume_at), "--save-grads", grads,
        "--overwrite", "--backend", args.backend, "--out", out] + extra)
    return out, grads


def resume(args, checkpoint, label, ranks, extra):
    out = os.path.join(args.workdir, label)
    shutil.rmtree(out, ignore_errors=True)
    run(launch(ranks) + [args.kiln, "train", args.config, "--resume",
                         checkpoint, "--backend", args.backend, "--out", out]
        + extra)
    return out


def checkpoint(out, step):
    return os.path.join(out, f"checkpoint-{step:06d}")


def write_tensors(path, tensors):
    """A safetensors file of name -> (dtype, shape, raw bytes)."""
    header, offset = {}, 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(tensors):
            f.write(tensors[name][2])


def optimizer_of(directory, workdir, label):
    """The checkpoint's moments as one file of full tensors (the ranks'
    shards joined in rank order, under ZeRO-1), and the problems found in
    the shard layout."""
    problems = []
    full = os.path.join(directory, "optimizer.safetensors")
    manifest_path = os.path.join(directory, "optimizer.manifest.json")
    if not os.path.exists(manifest_path):
        return full, problems, 1
    manifest = json.load(open(manifest_path))
    world = manifest["world_size"]
    shapes = {name: shape for name, (_, shape, _)
              in read_tensors(os.path.join(directory,
                                           "model.safetensors")).items()}
    shards = [read_tensors(os.path.join(directory, f))
              for f in manifest["files"]]
    joined = {}
    for entry in manifest["parameters"]:
        n = entry["elements"]
        stride = -(-n // world)
        for prefix in ("exp_avg.", "exp_avg_sq."):
            name = prefix + entry["name"]
            parts = []
            for rank, shard in enumerate(shards):
                count = max(0, min(n, stride * (rank + 1)) - stride * rank)
                dtype, shape, raw = shard[name]
                if dtype != "F32" or shape != [count]:
                    problems.append(f"{name} of rank {rank}: {dtype} "
                                    f"{shape}, expected F32 [{count}]")
                parts.append(raw)
            joined[name] = ("F32", shapes[entry["name"]], b"".join(parts))
    path = os.path.join(workdir, f"joined-{label}.safetensors")
    write_tensors(path, joined)
    return path, problems, world


def same_checkpoints(label, a, b, args, tolerance):
    ok = compare(f"{label}: model after step {args.steps}",
                 os.path.join(a, "model.safetensors"),
                 os.path.join(b, "model.safetensors"), tolerance)
    paths = []
    for directory, name in ((a, "a"), (b, "b")):
        path, problems, _ = optimizer_of(directory, args.workdir,
                                         f"{label}-{name}".replace(" ", "-"))
        for problem in problems:
            print(f"FAIL {label}: {problem}")
        ok &= not problems
        paths.append(path)
    ok &= compare(f"{label}: moments after step {args.steps}", paths[0],
                  paths[1], tolerance)
    return ok


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kiln")
    parser.add_argument("config")
    parser.add_argument("workdir")
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--resume-at", type=int, required=True)
    parser.add_argument("--tolerance", type=float, default=0.0)
    parser.add_argument("--reshard", action="append", default=[])
    parser.add_argument("--precision", default="fp32")
    # (cuda: one GPU per rank, NCCL between them.)
    parser.add_argument("--backend", default="host")
    args = parser.parse_args()

    shard = write_random_shard(args)
    zero0, grads0 = train(args, shard, "zero0", args.ranks, ["--zero", "0"])
    zero1, grads1 = train(args, shard, "zero1", args.ranks, ["--zero", "1"])

    plan = json.load(open(os.path.join(zero1, "plan.json")))
    kinds = [s["kernel"] for s in plan["steps"]]
    scattered = {o for s in plan["steps"] if s["kernel"] == "reduce_scatter"
                 for o in s["outputs"]}
    offsets = {v["id"]: v["offset"] for v in plan["values"]}
    gathered = {offsets[o] for s in plan["steps"]
                if s["kernel"] == "all_gather" for o in s["outputs"]}
    sharded = [s["attrs"]["shards"] for s in plan["steps"]
               if s["kernel"] in ("adamw", "global_norm")]
    # A sharded master (BF16): the value is this rank's shard, and its
    # compute copy is what is gathered.
    sizes = {v["id"]: _count(v["shape"]) for v in plan["values"]}
    masters = [p for p in plan["parameters"]
               if sizes[p["value"]] != sizes[p["grad"]]]
    print(f"zero1 plan: zero {plan['model'].get('zero')}, "
          f"{kinds.count('reduce_scatter')} reduce_scatter, "
          f"{kinds.count('all_gather')} all_gather, {kinds.count('all_reduce')}"
          f" all_reduce; adamw/global_norm shards {sorted(set(sharded))}; "
          f"masters sharded: {len(masters)} of {len(plan['parameters'])}")
    ok = (plan["model"].get("zero") == 1 and "all_reduce" not in kinds and
          set(sharded) == {args.ranks} and
          all(p["grad"] in scattered and
              offsets[p["compute_copy"] if p in masters else p["value"]]
              in gathered for p in plan["parameters"]))
    if not ok:
        print("FAIL the ZeRO-1 plan does not shard every gradient, update "
              "and parameter")

    straight = checkpoint(zero1, args.steps)
    files = sorted(f for f in os.listdir(straight) if f.startswith("optim"))
    print(f"zero1 checkpoint: {', '.join(files)}")
    expected = sorted(["optimizer.manifest.json"] + [
        f"optimizer-{r:05d}-of-{args.ranks:05d}.safetensors"
        for r in range(args.ranks)])
    if files != expected:
        print(f"FAIL zero1 checkpoint: expected {', '.join(expected)}")
        ok = False

    ok &= compare("zero1 vs zero0: loss and gradients of step 1", grads1,
                  grads0, args.tolerance)
    ok &= same_checkpoints("zero1 vs zero0", straight,
                           checkpoint(zero0, args.steps), args,
                           args.tolerance)

    middle = checkpoint(zero1, args.resume_at)
    # (Without --zero: the checkpoint's stage is a recorded setting.)
    again = resume(args, middle, "resumed", args.ranks, [])
    resumed_zero = json.load(open(os.path.join(again, "plan.json")))[
        "model"].get("zero")
    if resumed_zero != 1:
        print(f"FAIL zero1 resumed without --zero: the plan has zero "
              f"{resumed_zero}, not the checkpoint's 1")
        ok = False
    ok &= same_checkpoints(f"zero1 resumed at step {args.resume_at}",
                           checkpoint(again, args.steps), straight, args, 0.0)
    from0 = resume(args, checkpoint(zero0, args.resume_at), "from-zero0",
                   args.ranks, ["--zero", "1"])
    ok &= same_checkpoints(f"zero0's step {args.resume_at} resumed with "
                           "--zero 1", checkpoint(from0, args.steps), straight,
                           args, args.tolerance)
    for spec in args.reshard:
        ranks, tolerance = spec.split(":")
        ranks, tolerance = int(ranks), float(tolerance)
        micro = args.batch // args.ranks
        extra = ["--zero", "1"]
        if args.batch % (ranks * micro) == 0:
            extra += ["--micro-batch", str(micro)]
        out = resume(args, middle, f"reshard-{ranks}", ranks, extra)
        _, _, world = optimizer_of(checkpoint(out, args.steps),
                                   args.workdir, f"world-{ranks}")
        print(f"resumed on {ranks} rank{'s' if ranks > 1 else ''}: "
              f"checkpoint of {world} optimizer shard{'s' if world > 1 else ''}")
        if world != ranks:
            print(f"FAIL resumed on {ranks}: expected {ranks} shards")
            ok = False
        ok &= same_checkpoints(f"zero1 on {args.ranks} resumed on {ranks}",
                               checkpoint(out, args.steps), straight, args,
                               tolerance)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
