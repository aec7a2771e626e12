"""Side run: how far int8 matmuls could take encoding on this CPU, and what they cost in quality.

The issue's encode target is 1.3x a plain HF bf16 forward. Its bf16 ceiling (`--bound`: the forward's
matmuls and attention alone) is in bound.log; this run asks the same of int8. On the demo batches
(2 x 32 chunks of <= 256 tokens, SmolLM2-135M), in 3 rounds that alternate the four sides:
  - hf:          the plain HF forward (as `--compare-hf` times it);
  - bf16:        every layer's matmuls (q/k/v stacked, o, gate/up stacked, down) and attention, nothing else;
  - int8:        the same with int8 matmuls (`torch._int_mm`), each input quantised per token and each
                 output scaled back to bf16, in the fewest eager ops found (into reused buffers);
  - int8-kernel: the int8 matmuls alone, inputs already quantised: the kernel's own speed.
A library that swapped HF's matmuls for the int8 ones and kept everything else would take
hf - (bf16 - int8); its ratio to hf is printed. Quality: the shipped `auto` embedder's vectors of 96
SciFact documents, with every matmul's input and weight rounded as the int8 path rounds them,
against its bf16 vectors (cosine).

    python benchmarks/experiments/cpu-2core/throughput/int8_bound.py | tee benchmarks/experiments/cpu-2core/throughput/int8_bound.log
"""
import json
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.data import DATA
from benchmarks.throughput import _hf_batches, demo_chunks, plain_hf_seconds
from embedders import load_embedder
from unified_rag.backbone import Backbone

torch.manual_seed(0)
bb = Backbone.from_pretrained(dtype="bf16")
mean = load_embedder("mean", bb)
chunks = demo_chunks(bb.tokenizer, 256)[:64]
batches = _hf_batches(mean, chunks, 32)
cfg = bb.model.config
heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads


def per_row_int8(w):
    scale = w.float().abs().amax(1).clamp_min(1e-12) / 127
    return (w.float() / scale[:, None]).round().clamp(-127, 127).to(torch.int8).t().contiguous(), scale.bfloat16()


layers = []
for layer in bb.decoder.layers:
    a, m = layer.self_attn, layer.mlp
    ws = [torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), a.o_proj.weight,
          torch.cat([m.gate_proj.weight, m.up_proj.weight]), m.down_proj.weight]
    layers.append([(w, per_row_int8(w)) for w in ws])
buffers = {}


def int8_matmul(x, pack, quantise=True):
    wq, sw = pack
    x2 = x.reshape(-1, x.shape[-1])
    if quantise:
        sx = x2.abs().amax(-1, keepdim=True).float().clamp_min(1e-8) / 127
        xq = (x2 * (1 / sx).bfloat16()).round_().to(torch.int8)
    else:
        xq = buffers.setdefault(("q", x2.shape), torch.zeros(x2.shape, dtype=torch.int8))
    acc = torch._int_mm(xq, wq)
    out = buffers.setdefault(acc.shape, torch.empty(acc.shape, dtype=torch.bfloat16)).copy_(acc)
    if quantise:
        out.mul_(sx.bfloat16()).mul_(sw)
    return out.view(*x.shape[:-1], -1)


@torch.inference_mode()
def skeleton_seconds(kind):
    mm = {"bf16": lambda x, p: F.linear(x, p[0]), "int8": lambda x, p: int8_matmul(x, p[1]),
          "int8-kernel": lambda x, p: int8_matmul(x, p[1], quantise=False)}[kind]
    t = time.perf_counter()
    for b in batches:
        x = bb.decoder.embed_tokens(b["input_ids"])
        n, T = b["input_ids"].shape
        keep = b["attention_mask"].bool()
        mask = torch.ones(T, T, dtype=torch.bool).tril() & keep[:, None, None, :]
        for qkv_p, o_p, gu_p, down_p in layers:
            qkv = mm(x, qkv_p)
            q, k, v = qkv.split([heads * d, kv_heads * d, kv_heads * d], -1)
            q = q.reshape(n, T, heads, d).transpose(1, 2)
            k = k.reshape(n, T, kv_heads, d).transpose(1, 2)
            v = v.reshape(n, T, kv_heads, d).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            x = mm(o.transpose(1, 2).reshape(n, T, heads * d), o_p)
            gate = mm(x, gu_p)[..., :cfg.intermediate_size]  # SwiGLU's activation and product left out
            x = mm(gate.contiguous(), down_p)
    return time.perf_counter() - t


print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
      f"{len(chunks)} demo chunks in batches of 32, bf16")
sides = {"hf": lambda: plain_hf_seconds(bb, mean, chunks, 32), "bf16": lambda: skeleton_seconds("bf16"),
         "int8": lambda: skeleton_seconds("int8"), "int8-kernel": lambda: skeleton_seconds("int8-kernel")}
for fn in sides.values():
    fn()  # warm-up
rounds = {k: [] for k in sides}
for r in range(3):
    for k, fn in sides.items():
        rounds[k].append(fn())
    print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in rounds.items()))
med = {k: statistics.median(v) for k, v in rounds.items()}
print("medians: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
print(f"int8 kernel over bf16 matmuls+attention: {med['bf16'] / med['int8-kernel']:.2f}x; "
      f"with per-token quantising and scaling back: {med['bf16'] / med['int8']:.2f}x")
print(f"plain HF over the int8 skeleton (every other op removed too): {med['hf'] / med['int8']:.2f}x")
print(f"projected: HF's forward with its matmuls swapped for int8, all else kept: "
      f"{med['hf'] / (med['hf'] - med['bf16'] + med['int8']):.2f}x plain HF")

# Quality: the int8 path's rounding, applied to the shipped embedder's every matmul.
docs = [json.loads(line) for line in (DATA / "scifact" / "corpus.jsonl").read_text().splitlines()[:96]]
texts = [f"{d.get('title', '')} {d['text']}" for d in docs]
auto = load_embedder("auto", bb)
ref = auto.encode_documents(texts, batch_size=32, show_progress_bar=False)
linear = F.linear


def rounded(x, dims):
    s = x.float().abs().amax(dim=dims, keepdim=True).clamp_min(1e-8) / 127
    return ((x.float() / s).round().clamp(-127, 127) * s).to(x.dtype)


F.linear = lambda x, w, b=None: linear(rounded(x, (-1,)), rounded(w, (-1,)), b)
try:
    vec = auto.encode_documents(texts, batch_size=32, show_progress_bar=False)
finally:
    F.linear = linear
cos = (vec * ref).sum(1) / np.linalg.norm(vec, axis=1) / np.linalg.norm(ref, axis=1)
print(f"auto embedder, 96 SciFact documents, int8 rounding against bf16: cosine mean {cos.mean():.5f}, "
      f"lowest {cos.min():.5f}")
