#!/usr/bin/env python3
"""Host useful tokens/s of sequence packing: --packing documents against
--packing pad, on a corpus of real documents.

    bench/packing.py [--config C] [--batch B] [--seq-len T] [--steps 10]
                     [--repeats 3] [--precision fp32]

The corpus: the paragraphs of the novels in examples/data (split at blank
lines, byte-level tokens, each paragraph a document ended by the byte
tokenizer's end-of-text, 256), in their order. Their lengths are those of
real prose: most paragraphs are much shorter than a row, a few longer.
`pad` puts one document per row and pads the rest; `documents` packs them
(first-fit-decreasing over a lookahead buffer); `stream` (contiguous
windows across documents, attention across them too) is the reference. Both train the same model
with the same batch shape, alternating so that both see the same machine
load; the figure is data tokens per second (the median over steps of
metrics.jsonl, the first two left out, then over repeats), which is what
kiln logs when it packs, and the packing efficiency each reports.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "test" / "python"))
from compare_fusion import write_token_shard  # noqa: E402

END_OF_TEXT = 256


def corpus(path):
    """The examples' paragraphs as one shard; returns their lengths."""
    tokens, lengths = [], []
    for text in sorted((ROOT / "examples" / "data").glob("*.txt")):
        for paragraph in re.split(r"\n\s*\n", text.read_text("utf-8")):
            data = paragraph.strip().encode("utf-8")
            if data:
                tokens += list(data) + [END_OF_TEXT]
                lengths.append(len(data) + 1)
    write_token_shard(path, tokens)
    return lengths


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kiln", default=str(ROOT / "build" / "bin" / "kiln"))
    parser.add_argument("--config", default=str(
        ROOT / "examples" / "configs" / "tiny-llama" / "config.json"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        shard = os.path.join(work, "paragraphs.bin")
        lengths = corpus(shard)
        ordered = sorted(lengths)
        print(f"corpus: {len(lengths)} paragraphs of examples/data, "
              f"{sum(lengths)} tokens; length median "
              f"{ordered[len(ordered) // 2]}, 90th percentile "
              f"{ordered[len(ordered) * 9 // 10]}, longest {ordered[-1]}; "
              f"rows of {args.seq_len}, batch {args.batch}")
        # (stream: today's contiguous windows across documents, every
        # position data and attention across documents: for reference.)
        rates = {"pad": [], "documents": [], "stream": []}
        efficiency = {}
        for repeat in range(args.repeats):
            for mode in rates:
                out = os.path.join(work, f"{mode}-{repeat}")
                done = subprocess.run(
                    [args.kiln, "train", args.config, "--data", shard,
                     "--packing", mode, "--eot", str(END_OF_TEXT),
                     "--batch", str(args.batch),
                     "--seq-len", str(args.seq_len), "--steps",
                     str(args.steps), "--precision", args.precision,
                     "--no-checkpoint", "--out", out],
                    capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"kiln train --packing {mode} failed:\n"
                             f"{done.stderr}")
                steps = [json.loads(line)["tokens_per_s"] for line in
                         open(os.path.join(out, "metrics.jsonl"))]
                rates[mode].append(statistics.median(steps[2:] or steps))
                match = re.search(r"packing:\s+\w+, ([0-9.]+)%", done.stderr)
                efficiency[mode] = float(match.group(1)) if match else 100.0
        median = {mode: statistics.median(r) for mode, r in rates.items()}
        for mode, r in rates.items():
            print(f"{mode:>9}: {median[mode]:8.0f} data tok/s (runs "
                  f"{', '.join(f'{x:.0f}' for x in r)}), "
                  f"{efficiency[mode]:.1f}% of the rows data")
        print(f"documents / pad: x{median['documents'] / median['pad']:.2f} "
              f"useful tokens per second")


if __name__ == "__main__":
    main()
