"""Training throughput of Kiln's host backend against PyTorch CPU eager.

Both train the same model (a Hugging Face config.json) in FP32 on the same
batch shape with the same number of threads: Kiln through `kiln train
--precision fp32`, PyTorch through an eager implementation with the same
math (test/python/hf_reference.py) and torch.optim.AdamW. Each reports the
median tokens/s over the timed steps (after warm-up steps), measured in the
same run on the same machine; the ratio is Kiln / PyTorch.

usage: host_vs_torch.py [--kiln build/bin/kiln] [--config CONFIG]
                        [--batch 8] [--seq-len 128] [--steps 30]
                        [--threads N] [--precision fp32|bf16]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "python"))

import torch  # noqa: E402

import hf_reference as ref  # noqa: E402

WARMUP = 3


def torch_tokens_per_s(config, batch, seq_len, steps, data):
    params = {name: p.clone().requires_grad_(True)
              for name, p in ref.random_parameters(config, seed=0).items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-3, betas=(0.9, 0.95),
                                  weight_decay=0.1)
    rates = []
    window = seq_len + 1
    for step in range(steps):
        start = step * batch * seq_len
        rows = [data[start + i * seq_len: start + i * seq_len + window]
                for i in range(batch)]
        chunk = torch.tensor(rows, dtype=torch.long)
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = ref.loss(config, params, chunk[:, :-1], chunk[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        optimizer.step()
        elapsed = time.perf_counter() - began
        if step >= WARMUP:
            rates.append(batch * seq_len / elapsed)
    return statistics.median(rates), loss.item()


def kiln_tokens_per_s(kiln, config_path, batch, seq_len, steps, shard,
                      precision, threads):
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run([kiln, "train", config_path, "--data", shard,
                        "--steps", str(steps), "--batch", str(batch),
                        "--seq-len", str(seq_len), "--precision", precision,
                        "--out", out], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = [json.loads(line)
                for line in open(os.path.join(out, "metrics.jsonl"))]
    rates = [r["tokens_per_s"] for r in rows[WARMUP:]]
    return statistics.median(rates), rows[-1]["loss"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kiln", default=os.path.join(ROOT, "build", "bin",
                                                       "kiln"))
    parser.add_argument("--config", default=os.path.join(
        ROOT, "examples", "configs", "tiny-llama", "config.json"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = json.load(open(args.config))
    generator = torch.Generator().manual_seed(0)
    n = (args.steps + 1) * args.batch * args.seq_len + 1
    data = torch.randint(0, config["vocab_size"], (n,),
                         generator=generator).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        shard = os.path.join(tmp, "tokens.bin")
        ref.write_token_shard(shard, data)
        kiln_rate, kiln_loss = kiln_tokens_per_s(
            args.kiln, args.config, args.batch, args.seq_len, args.steps,
            shard, args.precision, args.threads)
    torch_rate, torch_loss = torch_tokens_per_s(config, args.batch,
                                                args.seq_len, args.steps,
                                                data)
    name = config["architectures"][0]
    print(f"model {name} ({args.config}), batch {args.batch} x seq "
          f"{args.seq_len}, {args.threads} threads, {args.steps} steps "
          f"({WARMUP} warm-up), median tokens/s")
    print(f"  kiln host ({args.precision}): {kiln_rate:10.0f} tok/s "
          f"(final loss {kiln_loss:.3f})")
    print(f"  pytorch eager (fp32): {torch_rate:10.0f} tok/s "
          f"(final loss {torch_loss:.3f}, torch {torch.__version__})")
    print(f"  ratio kiln / pytorch: {kiln_rate / torch_rate:.2f}x")


if __name__ == "__main__":
    main()
