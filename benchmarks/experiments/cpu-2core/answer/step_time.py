"""Why the answer trainer adapts only the top layers and runs batch 1: seconds per forward + backward
of a 600-token example on SmolLM2-135M-Instruct (bf16 autocast, loss on 8 positions), LoRA r 16 on all
30 layers against the top 15 and the top 10, and one batch of 4 equal-length examples against 4 alone.

    python benchmarks/experiments/cpu-2core/answer/step_time.py | tee benchmarks/experiments/cpu-2core/answer/step_time.log
"""
import time

import torch

from unified_rag import Backbone
from unified_rag.answer_adapter import AnswerAdapter


def seconds(b, adapter, batch: int, length: int = 600) -> float:
    ids = torch.randint(100, 40000, (batch, length), generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    with adapter.active(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = b.hidden_states(input_ids=ids, attention_mask=torch.ones_like(ids))
        loss = b.model.get_output_embeddings()(h[:, -8:]).float().logsumexp(-1).mean()
    loss.backward()
    return time.perf_counter() - t


b = Backbone.from_pretrained()
b.model.train()
for name, layers in (("all 30 layers", None), ("top 15 layers", list(range(15, 30))), ("top 10 layers", list(range(20, 30)))):
    adapter = AnswerAdapter(b, lora_layers=layers)
    for p in adapter.shared_parameters().values():
        p.requires_grad_(True)
    seconds(b, adapter, 1)  # warm-up
    one = min(seconds(b, adapter, 1) for _ in range(3))
    four = seconds(b, adapter, 4)
    print(f"{name}: {one:.2f} s per example alone; a batch of 4: {four:.2f} s ({four / (4 * one):.2f}x four alone)")
    for p in adapter.shared_parameters().values():
        p.requires_grad_(False)
