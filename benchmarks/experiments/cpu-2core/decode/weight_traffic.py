"""Side run: the floor of one decode step at batch 1, its matmuls alone. Every projection of
SmolLM2-135M's 30 layers and its LM head, as distinct random weights of the real shapes (so that,
as in decoding, none is still in cache from the call before), multiplied by one token's activations:
bf16 (`F.linear`, what the model runs) and int8 weight-only (`_weight_int8pack_mm`, what
`GenerationConfig(int8_weights=True)` runs). Three rounds of five tokens, ms per token.

    python benchmarks/experiments/cpu-2core/decode/weight_traffic.py | tee benchmarks/experiments/cpu-2core/decode/weight_traffic.log
"""
import platform
import time

import torch

torch.manual_seed(0)
SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)] * 30 + [(49152, 576)]
weights = [torch.randn(o, i).to(torch.bfloat16) for o, i in SHAPES]
packs = []
for w in weights:
    scale = w.float().abs().amax(1) / 127
    packs.append(((w.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale.to(torch.bfloat16)))
inputs = [torch.randn(1, i, dtype=torch.bfloat16) for _, i in SHAPES]
mb = sum(w.numel() for w in weights) * 2 / 2**20
print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
      f"{len(SHAPES)} matmuls, {mb:.0f} MB of bf16 weights a token")
with torch.inference_mode():
    for r in range(3):
        for name, fn in (("bf16", lambda i: torch.nn.functional.linear(inputs[i], weights[i])),
                         ("int8", lambda i: torch.ops.aten._weight_int8pack_mm(inputs[i], *packs[i]))):
            t = time.perf_counter()
            for _ in range(5):
                for i in range(len(SHAPES)):
                    fn(i)
            print(f"round {r}: {name} {(time.perf_counter() - t) / 5 * 1e3:.1f} ms per token of matmuls")
