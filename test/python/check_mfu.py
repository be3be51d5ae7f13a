"""The metrics' MFU against an independent count of the step's FLOPs.

usage: check_mfu.py CONFIG PLAN METRICS

The plan's model.flops_per_step must be the transformer's matrix FLOPs
counted from the config: 6 x tokens x the parameters of every linear layer
and the LM head (forward, input and weight gradients), plus causal
attention's 2 x 2 B H T^2 d forward and 2.5 times that backward, per layer.
Each metrics line's mfu must be flops_per_step over the step's seconds
(its tokens over tokens_per_s) over model.peak_flops. Standard library only.
"""

import json
import sys


def main():
    config = json.load(open(sys.argv[1]))
    plan = json.load(open(sys.argv[2]))
    model = plan["model"]
    B, T = model["batch"] * model["micro_batches"], model["seq_len"]
    h = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    d = h // heads
    layer = h * h * 2 + 2 * h * kv * d + 3 * h * config["intermediate_size"]
    linear = config["num_hidden_layers"] * layer + config["vocab_size"] * h
    attention = config["num_hidden_layers"] * 14 * B * heads * T * T * d / 2
    expected = 6 * B * T * linear + attention
    got = model["flops_per_step"]
    ok = abs(got - expected) <= 1e-9 * expected
    print(f"flops_per_step {got:.4g} {'==' if ok else '!='} the count "
          f"{expected:.4g}; peak {model['peak_flops']:.3g} of "
          f"{model['peak_target']}")
    worst = 0.0
    for line in open(sys.argv[3]):
        record = json.loads(line)
        seconds = B * T / record["tokens_per_s"]
        mfu = got / seconds / model["peak_flops"]
        worst = max(worst, abs(record["mfu"] - mfu) / mfu)
    print(f"mfu of every step {'==' if worst < 1e-9 else '!='} "
          f"flops / seconds / peak")
    ok = ok and worst < 1e-9
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
