"""Writes a copy of a plan with one edit that kiln-run must refuse.

    mutate_plan.py <plan.json> <edit> <out.json>
"""

import json
import sys


def first(plan, kernel):
    return next(s for s in plan["steps"] if s["kernel"] == kernel)


def edit(plan, name):
    if name == "gemm-batch":
        first(plan, "gemm")["attrs"]["batch"] = 100
    elif name == "gemm-m":
        first(plan, "gemm")["attrs"]["m"] = 6400
    elif name == "flash-no-heads":
        first(plan, "flash_attention_fwd")["attrs"]["num_heads"] = 0
    elif name == "adamw-three-inputs":
        step = first(plan, "adamw")
        step["inputs"] = step["inputs"][:3]
    elif name == "no-steps":
        plan["steps"] = []
    elif name == "loss-on-parameter":
        loss = next(o["value"] for o in plan["outputs"] if o["name"] == "loss")
        param = plan["parameters"][0]["value"]
        plan["values"][loss]["offset"] = plan["values"][param]["offset"]
    else:
        sys.exit(f"unknown edit {name}")


plan = json.load(open(sys.argv[1]))
edit(plan, sys.argv[2])
json.dump(plan, open(sys.argv[3], "w"))
