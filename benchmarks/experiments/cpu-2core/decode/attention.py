"""Side run: one decode step's attention at batch 1, SmolLM2-135M's shapes (9 query heads, 3 KV heads,
head size 64) over 300 cached tokens held in a longer buffer, as the decode loop holds them. torch's
SDPA on bf16 tensors (what the model's own forward and the full-precision loop run) against the same
call on float32 tensors (what the int8 loop runs on a CPU), and the largest difference between them.

    python benchmarks/experiments/cpu-2core/decode/attention.py | tee benchmarks/experiments/cpu-2core/decode/attention.log
"""
import platform
import time

import torch
import torch.nn.functional as F

torch.manual_seed(0)
T, BUFFER = 300, 600
keys, values = torch.randn(2, 1, 3, BUFFER, 64).unbind(0)
query = torch.randn(1, 9, 1, 64)
sides = {"bf16": (query.bfloat16(), keys.bfloat16(), values.bfloat16()), "float32": (query, keys, values)}


def attend(q, k, v):
    return F.scaled_dot_product_attention(q, k[:, :, :T], v[:, :, :T], scale=0.125, enable_gqa=True)


print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
      f"one query over {T} keys")
with torch.inference_mode():
    for r in range(3):
        line = []
        for name, args in sides.items():
            for _ in range(100):
                attend(*args)
            t = time.perf_counter()
            for _ in range(2000):
                attend(*args)
            line.append(f"{name} {(time.perf_counter() - t) / 2000 * 1e6:.0f} us")
        print(f"round {r + 1}: " + ", ".join(line))
    diff = (attend(*sides["bf16"]).float() - attend(*sides["float32"])).abs().max()
    print(f"largest difference, bf16 against float32: {diff:.1e}")
