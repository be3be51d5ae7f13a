"""--init from Hugging Face model directories, checked against PyTorch.

usage: compare_init.py KILN CONFIG WORKDIR --layout LAYOUT

Writes random weights (hf_reference.random_parameters) as a model
directory in one of the layouts Hugging Face publishes, trains one FP32
step from it with --init DIR and --save-grads, and compares Kiln's loss
with PyTorch's from the same weights (within 1e-5 relative: the weights
must have arrived, each in its place).

  single   model.safetensors, F32
  sharded  model.safetensors.index.json and two shards, one of them F16
           (the weights rounded to FP16 first, so that both sides use the
           same values)
  openai   GPT-2 as OpenAI's files name it: no `transformer.` prefix, the
           attention's causal-mask buffers (h.N.attn.bias) as extra
           tensors, no lm_head (tied)
Prints the loss comparison and Kiln's log lines that mention the file.
"""

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference as ref  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kiln")
    parser.add_argument("config")
    parser.add_argument("workdir")
    parser.add_argument("--layout", required=True,
                        choices=["single", "sharded", "openai"])
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    config = json.load(open(args.config))
    params = ref.random_parameters(config, seed=99)
    model_dir = os.path.join(args.workdir, "model")
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(dict(config, torch_dtype="bfloat16"), f)

    if args.layout == "single":
        ref.write_safetensors(os.path.join(model_dir, "model.safetensors"),
                          params)
    elif args.layout == "sharded":
        names = list(params)
        first, second = names[:len(names) // 2], names[len(names) // 2:]
        for name in second:
            params[name] = params[name].half().float()
        ref.write_safetensors(
            os.path.join(model_dir, "model-00001-of-00002.safetensors"),
            {n: params[n] for n in first})
        ref.write_safetensors(
            os.path.join(model_dir, "model-00002-of-00002.safetensors"),
            {n: params[n].half() for n in second})
        weight_map = {n: "model-00001-of-00002.safetensors" for n in first}
        weight_map.update(
            {n: "model-00002-of-00002.safetensors" for n in second})
        with open(os.path.join(model_dir, "model.safetensors.index.json"),
                  "w") as f:
            json.dump({"metadata": {"total_size": 0},
                       "weight_map": weight_map}, f)
    else:
        openai = {n.removeprefix("transformer."): p
                  for n, p in params.items() if n != "lm_head.weight"}
        n = config.get("n_positions", 1024)
        for i in range(config["n_layer"]):
            openai[f"h.{i}.attn.bias"] = torch.ones(1, 1, n, n).tril()
        ref.write_safetensors(os.path.join(model_dir, "model.safetensors"),
                          openai)

    generator = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, config["vocab_size"], (2048,),
                           generator=generator)
    shard = os.path.join(args.workdir, "tokens.bin")
    ref.write_token_shard(shard, tokens.tolist())
    grads = os.path.join(args.workdir, "grads.safetensors")
    out = os.path.join(args.workdir, "out")
    done = subprocess.run(
        [args.kiln, "train", args.config, "--data", shard, "--steps", "1",
         "--batch", "2", "--seq-len", "16", "--precision", "fp32", "--init",
         model_dir, "--save-grads", grads, "--overwrite", "--out", out],
        capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"kiln train failed:\n{done.stderr}")
    for line in done.stderr.splitlines():
        if "model" in line and ("warning" in line or "note" in line):
            print(line.replace(args.workdir, "WORKDIR"))
    kiln = ref.read_safetensors(grads)
    with torch.no_grad():
        expected = ref.loss(config, params, kiln["input_ids"].long(),
                            kiln["targets"].long()).item()
    got = kiln["loss"].item()
    error = abs(got - expected) / abs(expected)
    ok = error <= 1e-5
    print(f"{args.layout}: loss kiln {got:.6f} torch {expected:.6f} "
          f"{'within' if ok else 'NOT within'} 1e-05")
    written = json.load(open(os.path.join(out, "checkpoint-000001",
                                          "config.json")))
    print(f"checkpoint config.json torch_dtype {written.get('torch_dtype')}")
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
