"""A packed batch against its documents trained one at a time.

usage: compare_packing.py KILN CONFIG WORKDIR --batch B --seq-len T
                          [--precision fp32|bf16] [--tolerance REL]
                          [--packing documents|pad]

Writes a token shard of documents of random tokens (lengths fixed by a
seeded generator, one longer than a row, so that it is split), each ending
with the end-of-text token (the vocabulary's last id, given as --eot), and
trains one step with --packing and --save-grads. From the saved batch it
checks, each printed:
  - every row is cut into documents by cu_seqlens, positions restart at 0
    in each, the last target of a document is ignored unless the row cut it
    (then it is the document's next token), padding is ignored;
  - the loss and every gradient equal the token-weighted mean of the
    documents' own losses and gradients, each document trained alone (one
    row of exactly its tokens, --packing stream, the same seed), within
    --tolerance (||a - b|| / ||b||).
Standard library only.
"""

import argparse
import json
import os
import random
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_fusion import read_tensors, write_token_shard  # noqa

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(command):
    done = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stderr


def values(entry):
    dtype, shape, raw = entry
    code = {"F32": "f", "I32": "i"}[dtype]
    return list(struct.unpack(f"<{len(raw) // 4}{code}", raw))


def train(args, shard, label, batch, seq_len, packing):
    out = os.path.join(args.workdir, label)
    grads = os.path.join(args.workdir, f"grads-{label}.safetensors")
    log = run([args.kiln, "train", args.config, "--data", shard, "--steps",
               "1", "--batch", str(batch), "--seq-len", str(seq_len),
               "--precision", args.precision, "--seed", "5", "--packing",
               packing, "--eot", str(args.eot), "--save-grads", grads,
               "--no-checkpoint", "--overwrite", "--out", out])
    return read_tensors(grads), log


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kiln")
    parser.add_argument("config")
    parser.add_argument("workdir")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--packing", default="documents")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    vocab = json.load(open(args.config))["vocab_size"]
    args.eot = vocab - 1
    T = args.seq_len

    # Documents of 2 .. T / 2 tokens and one of T + T / 4 (split at a row's
    # end), each ending with the end-of-text token.
    rng = random.Random(11)
    lengths = [rng.randint(2, T // 2) for _ in range(8 * args.batch)]
    lengths.insert(1, T + T // 4)
    tokens = []
    for n in lengths:
        tokens += [rng.randrange(vocab - 1) for _ in range(n - 1)] + [args.eot]
    shard = os.path.join(args.workdir, "documents.bin")
    write_token_shard(shard, tokens)

    packed, log = train(args, shard, "packed", args.batch, T, args.packing)
    inputs, targets = values(packed["input_ids"]), values(packed["targets"])
    positions, cu = values(packed["position_ids"]), values(packed["cu_seqlens"])
    ok = True

    # The layout: documents within rows, positions, targets.
    documents = []  # (begin, end) of documents with counted targets
    split = 0
    for begin, end in zip(cu, cu[1:]):
        if begin // T != (end - 1) // T:
            print(f"FAIL document [{begin}, {end}) crosses a row boundary")
            ok = False
        if positions[begin:end] != list(range(end - begin)):
            print(f"FAIL positions of document [{begin}, {end}) do not count "
                  f"from 0: {positions[begin:end]}")
            ok = False
        if any(t != -100 for t in targets[begin:end - 1]):
            if targets[end - 1] != -100:
                split += 1  # a piece the row cut: its next token
            documents.append((begin, end))
        elif targets[end - 1] != -100:
            print(f"FAIL padding [{begin}, {end}) has a counted target")
            ok = False
    print(f"packed {args.packing}: {len(documents)} documents in "
          f"{args.batch} rows of {T} ({len(cu) - 1 - len(documents)} "
          f"padding), {split} cut at a row's end, "
          f"{sum(t != -100 for t in targets)} counted targets")
    for line in log.splitlines():
        if "packing:" in line:
            print(line.strip().split(" (")[0])

    # Each document alone: its inputs and the target after the last (the
    # last input of an ended document has none: leave it out).
    total = sum(t != -100 for t in targets)
    mean = {}
    for i, (begin, end) in enumerate(documents):
        alone = inputs[begin:end]
        if targets[end - 1] != -100:
            alone = alone + [targets[end - 1]]
        counted = sum(t != -100 for t in targets[begin:end])
        path = os.path.join(args.workdir, f"document-{i}.bin")
        write_token_shard(path, alone)
        grads, _ = train(args, path, f"document-{i}", 1, len(alone) - 1,
                         "stream")
        weight = counted / total
        for name, entry in grads.items():
            if entry[0] != "F32":
                continue
            data = values(entry)
            acc = mean.setdefault(name, [0.0] * len(data))
            for j, x in enumerate(data):
                acc[j] += weight * x

    worst, compared = 0.0, 0
    for name, expected in sorted(mean.items()):
        got = values(packed[name])
        norm = sum(x * x for x in expected) ** 0.5
        diff = sum((a - b) ** 2 for a, b in zip(got, expected)) ** 0.5
        error = diff / norm if norm > 0 else diff
        worst = max(worst, error)
        compared += 1
        if error > args.tolerance:
            print(f"FAIL {name}: relative error {error:.2e} > "
                  f"{args.tolerance:g}")
            ok = False
    print(f"packed vs documents alone: loss and {compared - 1} gradients "
          f"within {args.tolerance:g} (worst {worst:.1e})")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
