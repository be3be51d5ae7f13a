"""Compares the planned memory of two `kiln inspect --json` outputs at two
sequence lengths (the second twice the first): buffers must grow linearly,
not quadratically."""

import json
import sys

small, large = (json.load(open(path)) for path in sys.argv[1:3])
assert large["seq_len"] == 2 * small["seq_len"]


def temporaries(report):
    return report["peak_memory_bytes"] - report["persistent_memory_bytes"]


largest_ratio = large["largest_buffer_bytes"] / small["largest_buffer_bytes"]
temp_ratio = temporaries(large) / temporaries(small)
score_matrix = 4 * large["seq_len"] ** 2
print(f"seq {small['seq_len']} -> {large['seq_len']}: largest buffer "
      f"x{largest_ratio:.2f}, temporaries x{temp_ratio:.2f}; largest "
      f"{large['largest_buffer_bytes']} bytes < {score_matrix} (one "
      f"{large['seq_len']}^2 FP32 score matrix)")
assert largest_ratio <= 2.05 and temp_ratio <= 2.05, "memory grows faster than N"
assert large["largest_buffer_bytes"] < score_matrix / 16
