"""Encode throughput of the default backbone against this machine's measured matmul peak.

    python -m benchmarks.throughput [--model M] [--batch-size 32] [--seq-len 256] [--batches 8]

Prints tokens/s and docs/s for realistic chunks (the shipped demo corpus, chunked as UnifiedRAG
chunks it), the bf16 and float32 matmul peak measured in the same run, and model FLOPs utilisation
(MFU): forward FLOPs actually needed per token over the bf16 (or float32) peak.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

DEMO = Path(__file__).resolve().parents[1] / "examples" / "theorems" / "theorems.jsonl"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 4096, seconds: float = 2.0) -> float:
    """Best FLOP/s of an n x n x n matmul: the ceiling any model on this machine can reach."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def forward_flops_per_token(config, seq_len: int) -> float:
    """2 x matmul parameters (no embedding lookup, no LM head) + attention scores and values."""
    h, L = config.hidden_size, config.num_hidden_layers
    d_head = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q = config.num_attention_heads * d_head
    kv = config.num_key_value_heads * d_head
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size
    attention = 2 * 2 * q * seq_len / 2  # QK^T and AV, causal: on average half the keys
    return L * (2 * per_layer + attention)


def demo_chunks(tokenizer, seq_len: int) -> list[str]:
    from unified_rag.chunking import ChunkConfig, chunk_text

    cfg = ChunkConfig(chunk_tokens=seq_len, overlap_tokens=min(32, seq_len // 8))
    texts = [json.loads(line)["text"] for line in DEMO.read_text().splitlines()]
    return [c for t in texts for c, _, _ in chunk_text(t, tokenizer, cfg)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="backbone (default: offline SmolLM2-135M-Instruct)")
    ap.add_argument("--embedder", default="mean")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256, help="chunk size in tokens")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    from embedders import load_embedder
    from unified_rag.backbone import Backbone

    backbone = Backbone.from_pretrained(args.model, dtype=args.dtype)
    embedder = load_embedder(args.embedder, backbone)
    dev = backbone.device
    chunks = demo_chunks(backbone.tokenizer, args.seq_len)[: args.batch_size * args.batches]
    n_tokens = sum(len(ids) for ids, _, _ in embedder.tokenize(chunks, None))
    embedder.encode(chunks[: args.batch_size], batch_size=args.batch_size)  # warm-up
    _sync(dev)
    t = time.perf_counter()
    embedder.encode_documents(chunks, batch_size=args.batch_size, show_progress_bar=False)
    _sync(dev)
    dt = time.perf_counter() - t

    peak_bf16 = matmul_peak(torch.bfloat16, dev)
    peak_fp32 = matmul_peak(torch.float32, dev)
    model_flops = forward_flops_per_token(backbone.model.config, n_tokens / len(chunks)) * n_tokens / dt
    peak = peak_bf16 if backbone.dtype in (torch.bfloat16, torch.float16) else peak_fp32
    cpu = platform.processor() or platform.machine()
    r = dict(device=str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev), cpu=cpu,
             threads=torch.get_num_threads(), torch=torch.__version__, backbone=backbone.name,
             dtype=str(backbone.dtype).removeprefix("torch."), embedder=embedder.kind, batch_size=args.batch_size,
             docs=len(chunks), tokens=n_tokens, seconds=round(dt, 3), tokens_per_s=round(n_tokens / dt, 1),
             docs_per_s=round(len(chunks) / dt, 2), model_tflops=round(model_flops / 1e12, 4),
             peak_bf16_tflops=round(peak_bf16 / 1e12, 3), peak_fp32_tflops=round(peak_fp32 / 1e12, 3),
             bf16_over_fp32=round(peak_bf16 / peak_fp32, 2), mfu=round(model_flops / peak, 3))
    print(f"device {r['device']} ({r['threads']} threads), {r['backbone']} in {r['dtype']}, embedder {r['embedder']}")
    print(f"encode: {r['tokens_per_s']:,.0f} tokens/s, {r['docs_per_s']:.1f} docs/s "
          f"({r['docs']} chunks of <= {args.seq_len} tokens, batch {args.batch_size})")
    print(f"matmul peak: bf16 {r['peak_bf16_tflops']:.2f} TFLOP/s, float32 {r['peak_fp32_tflops']:.2f} TFLOP/s "
          f"(bf16/fp32 = {r['bf16_over_fp32']:.1f}x)")
    print(f"model FLOPs: {r['model_tflops']:.3f} TFLOP/s = {100 * r['mfu']:.0f}% of the {r['dtype']} matmul peak (MFU)")
    if args.json:
        from unified_rag.io import atomic_write_json

        atomic_write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
