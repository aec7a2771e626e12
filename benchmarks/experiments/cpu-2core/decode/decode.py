"""Side run: decode speed at batch 1 (64 new tokens, greedy, SmolLM2-135M-Instruct in bf16), HF
`model.generate` with its default dynamic cache against the same call with a static cache and a
compiled forward (torch.compile, inductor), on the same prompts in one run. It measures how far the
issue's 2x decode target is from what compilation gives on this CPU; the library does not ship it.

    python benchmarks/experiments/cpu-2core/decode/decode.py | tee benchmarks/experiments/cpu-2core/decode/decode.log
"""
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from unified_rag.backbone import Backbone
from unified_rag.generator import Generator

QUESTIONS = ["Explain how the Kraft inequality constrains prefix codes, with an example.",
             "What does the central limit theorem say, and when does it apply?",
             "Describe the Pythagorean theorem and one of its proofs."]
bb = Backbone.from_pretrained(dtype="bf16")
gen, model, tok = Generator(bb), bb.model, bb.tokenizer
print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
      f"{bb.name} in {str(bb.dtype).removeprefix('torch.')}")


def tokens_per_s(**kw) -> tuple[float, list]:
    rates, outs = [], []
    for q in QUESTIONS:
        x = torch.tensor([gen.prompt_ids(q)])
        with torch.inference_mode():
            t = time.perf_counter()
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=64, min_new_tokens=64,
                                 do_sample=False, pad_token_id=tok.pad_token_id, **kw)
            rates.append(64 / (time.perf_counter() - t))
        outs.append(out[0, x.shape[1]:].tolist())
    return sorted(rates)[len(rates) // 2], outs


tokens_per_s()  # warm-up
eager, eager_out = tokens_per_s()
print(f"HF generate, dynamic cache: {eager:.1f} tokens/s (median of {len(QUESTIONS)} prompts, 64 new tokens, batch 1)")
t = time.perf_counter()
model.forward = torch.compile(model.forward, dynamic=False)
for _ in range(2):
    tokens_per_s(cache_implementation="static")
print(f"static cache + torch.compile: {time.perf_counter() - t:.0f} s to compile and warm up")
comp, comp_out = tokens_per_s(cache_implementation="static")
same = sum(a == b for a, b in zip(eager_out, comp_out))
print(f"static cache + torch.compile: {comp:.1f} tokens/s = {comp / eager:.2f}x; {same} of {len(QUESTIONS)} "
      f"answers token-identical to eager (bf16 sums in another order)")
