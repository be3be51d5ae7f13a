"""Checks on the outputs of `kiln train`, for lit tests.

  check_metrics.py falls METRICS STEPS MAX_FINAL   the run logged every step
      and its loss fell: the mean of the last 5 losses is below MAX_FINAL and
      at least 1.5 below the first loss
  check_metrics.py same METRICS_A METRICS_B STEPS  both runs logged the same
      losses at every step (bit for bit)
  check_metrics.py names MODEL.safetensors CONFIG  the checkpoint has exactly
      the Hugging Face parameters of CONFIG, with their shapes, in FP32, and
      PyTorch loads it by name into the reference model, whose loss on
      English-like bytes is finite and well below uniform
"""

import json
import math
import os
import struct
import sys


def records(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def main():
    command = sys.argv[1]
    if command == "falls":
        rows = records(sys.argv[2])
        steps, limit = int(sys.argv[3]), float(sys.argv[4])
        assert [r["step"] for r in rows] == list(range(1, steps + 1)), \
            "steps logged: %s" % [r["step"] for r in rows]
        first = rows[0]["loss"]
        final = sum(r["loss"] for r in rows[-5:]) / 5
        print(f"loss {first:.3f} -> {final:.3f} (mean of the last 5)")
        assert final < limit and first - final > 1.5, "the loss did not fall"
    elif command == "same":
        a, b = records(sys.argv[2]), records(sys.argv[3])
        steps = int(sys.argv[4])
        assert [r["step"] for r in b] == list(range(1, steps + 1))
        for ra, rb in zip(a, b):
            assert ra["loss"] == rb["loss"], \
                f"step {ra['step']}: {ra['loss']} != {rb['loss']}"
        print(f"{steps} identical losses")
    elif command == "names":
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                        "..", "..", "python"))
        with open(sys.argv[2], "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        import hf_reference
        expected = hf_reference.parameter_shapes(json.load(open(sys.argv[3])))
        assert set(header) == set(expected), \
            set(header).symmetric_difference(expected)
        for name, shape in expected.items():
            assert tuple(header[name]["shape"]) == tuple(shape), name
            assert header[name]["dtype"] == "F32", name
        import torch
        config = json.load(open(sys.argv[3]))
        params = hf_reference.read_safetensors(sys.argv[2])
        text = b"It is a truth universally acknowledged, that a single man"
        tokens = torch.tensor([list(text)], dtype=torch.long)
        loss = hf_reference.loss(config, params, tokens[:, :-1],
                                 tokens[:, 1:]).item()
        uniform = math.log(config["vocab_size"])
        print(f"{len(expected)} parameters with Hugging Face names; PyTorch "
              f"loss {loss:.3f} (uniform {uniform:.3f})")
        assert math.isfinite(loss) and loss < uniform - 1.0
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
