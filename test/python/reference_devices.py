"""Runs the PyTorch reference (hf_reference.loss) with every parameter and
the tokens on PyTorch's "meta" device, for each model family. Any tensor the
reference makes on the CPU instead of on the tokens' device (positions,
masks, RoPE frequencies) fails here exactly as it would on CUDA, without a
GPU. Then, where this torch has F.scaled_dot_product_attention, checks the
sdpa=True path (what the GPU benchmark's eager baseline runs) against the
explicit attention on the CPU.

    reference_devices.py <config.json>...
"""

import json
import sys

import torch
import torch.nn.functional as F

import hf_reference as ref


def main():
    for path in sys.argv[1:]:
        config = json.load(open(path))
        name = config["architectures"][0]
        tokens = torch.randint(0, config["vocab_size"], (2, 9))
        params = ref.random_parameters(config, seed=0)
        meta = {n: p.to("meta") for n, p in params.items()}
        on_meta = tokens.to("meta")
        loss = ref.loss(config, meta, on_meta[:, :-1], on_meta[:, 1:])
        assert loss.device.type == "meta", loss.device
        print(f"ok {name}: every tensor on the tokens' device")
        if not hasattr(F, "scaled_dot_product_attention"):
            print(f"skipped {name} sdpa: torch {torch.__version__} has no "
                  "F.scaled_dot_product_attention")
            continue
        explicit = ref.loss(config, params, tokens[:, :-1], tokens[:, 1:])
        fused = ref.loss(config, params, tokens[:, :-1], tokens[:, 1:],
                         sdpa=True)
        error = abs(fused.item() - explicit.item()) / abs(explicit.item())
        assert error < 1e-5, (name, explicit.item(), fused.item())
        print(f"ok {name} sdpa: loss within {error:.1e} of the explicit one")


if __name__ == "__main__":
    main()
