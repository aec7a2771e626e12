"""Encode throughput of the default backbone against this machine's measured matmul peak.

    python -m benchmarks.throughput [--model M] [--batch-size 32] [--seq-len 256] [--batches 8]
        [--compare-hf [--bound]] [--compile] [--index-overhead N] [--kv-reuse] [--decode N]

Prints tokens/s and docs/s for realistic chunks (the shipped demo corpus, chunked as UnifiedRAG
chunks it), the bf16 and float32 matmul peak measured in the same run, and model FLOPs utilisation
(MFU): forward FLOPs actually needed per token over the bf16 (or float32) peak.

`--compare-hf` times a plain Hugging Face forward (the decoder, then mean pooling in plain torch) on
the library's own padded batches of the same chunks, in the same run and dtype, in `--rounds`
rounds that alternate with the library's encode, and prints the median of the rounds' ratios.
`--bound` adds the same batches through the forward's matmuls and attention alone: plain HF's time
over that is the most any library on the same kernels could gain. `--compile` then compiles the
embedding forward (`Backbone.compile`), times the compile, and times the library again.

`--index-overhead N` indexes the first N SciFact documents through `UnifiedRAG.add_documents`
(chunking, encoding, FAISS, SQLite) with `--embedder`, then encodes the same chunks alone, in the same
run, and prints the ratio, and the time `encode` spends re-tokenizing those chunks.

`--kv-reuse` adds the time to first token of a RAG answer (question-first prompt, `--sources` demo
chunks) three ways, on the same prompts in the same run: a fresh prefill of the whole prompt
(`model.generate`), the generator with the system turn's cached KV, and the generator continuing from
the chat-framed query embedder's own pass (`embedders.pooling`, query_frame="chat"). The query pass
is not counted: retrieval needs it either way.

`--decode N` times decoding at batch 1 on N squad-rag prompts (a question and its gold paragraph, in
the RAG prompt), three ways, one after another on each prompt: HF `model.generate` with its default
dynamic cache, the library's own decode loop, and that loop on int8 weights. Each makes exactly
`--new-tokens` tokens (EOS held back); decode speed is the tokens after the first over the time after
the first token (a 1-token call times the prefill). Each also answers with the rag-qa budget (32
tokens, stopping at EOS), scored against the gold answers (SQuAD EM and F1): the quality cost of int8.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

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


QUESTIONS = ["What does the Kraft inequality say about prefix codes?",
             "Which condition makes a function integrable according to the theorem?",
             "How is the central limit theorem used to approximate sums of random variables?",
             "What is the relation between eigenvalues and the determinant of a matrix?"]


def _best_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return round(1e3 * best, 1)


def _hf_batches(embedder, chunks: list[str], batch_size: int) -> list[dict]:
    """The library's own padded batches, longest first, collated beforehand (never timed)."""
    items = embedder.tokenize(chunks, embedder.config.document_instruction, warn=False)
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
    return [embedder.collate([items[i] for i in order[s:s + batch_size]]) for s in range(0, len(order), batch_size)]


@torch.inference_mode()
def plain_hf_seconds(backbone, embedder, chunks: list[str], batch_size: int) -> float:
    """A plain HF forward over the library's own padded batches."""
    batches = _hf_batches(embedder, chunks, batch_size)
    _sync(backbone.device)
    t = time.perf_counter()
    for b in batches:
        h = backbone.decoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        torch.nn.functional.normalize(((h * m).sum(1) / m.sum(1)).float(), dim=-1).cpu()
    _sync(backbone.device)
    return time.perf_counter() - t


@torch.inference_mode()
def matmul_attention_seconds(backbone, embedder, chunks: list[str], batch_size: int) -> float:
    """The forward's matmuls and attention alone, on the same batches: every layer's seven projections
    (the base weights, as the plain HF forward uses them) and SDPA with the same causal padding mask,
    without norms, rotary, activation or residuals. No library built on these eager kernels can run the
    forward faster than this, so plain HF's time over it bounds any speed-up short of a faster matmul."""
    import torch.nn.functional as F

    cfg = backbone.model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    base = lambda lin: getattr(lin, "base_layer", lin)  # noqa: E731  (a peft-wrapped projection's own weights)
    batches = _hf_batches(embedder, chunks, batch_size)
    _sync(backbone.device)
    t = time.perf_counter()
    for b in batches:
        x = backbone.decoder.embed_tokens(b["input_ids"])
        n, T = b["input_ids"].shape
        keep = b["attention_mask"].bool()
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril() & keep[:, None, None, :]
        for layer in backbone.decoder.layers:
            a, m = layer.self_attn, layer.mlp
            q = base(a.q_proj)(x).view(n, T, heads, d_head).transpose(1, 2)
            k = base(a.k_proj)(x).view(n, T, kv_heads, d_head).transpose(1, 2)
            v = base(a.v_proj)(x).view(n, T, kv_heads, d_head).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv_heads != heads)
            x = base(a.o_proj)(o.transpose(1, 2).reshape(n, T, heads * d_head))
            gate, _ = base(m.gate_proj)(x), base(m.up_proj)(x)  # SwiGLU's activation and product left out
            x = base(m.down_proj)(gate)
    _sync(backbone.device)
    return time.perf_counter() - t


def _timed_encode(embedder, chunks: list[str], batch_size: int, merge: bool = True) -> float:
    """Seconds to encode; `merge=False`: a LoRA embedder runs peft's own unmerged forward instead."""
    from unified_rag import lora as adapters

    _sync(embedder.backbone.device)
    old, adapters.MERGE_AT_INFERENCE = adapters.MERGE_AT_INFERENCE, merge
    try:
        t = time.perf_counter()
        embedder.encode_documents(chunks, batch_size=batch_size, show_progress_bar=False)
        _sync(embedder.backbone.device)
        return time.perf_counter() - t
    finally:
        adapters.MERGE_AT_INFERENCE = old


def kv_reuse_figures(backbone, chunks: list[str], n_sources: int, repeats: int = 3) -> dict:
    """Time to first token (best of `repeats`, median over QUESTIONS) with and without KV reuse."""
    from embedders.pooling import MeanPoolEmbedder
    from unified_rag.generator import Generator
    from unified_rag.types import Hit

    gen, emb = Generator(backbone), MeanPoolEmbedder(backbone, query_frame="chat")
    rows = []
    for j, q in enumerate(QUESTIONS):
        hits = [Hit(rank=i + 1, score=1.0, doc_id=str(i), chunk_id=i, text=chunks[(j * n_sources + i) % len(chunks)],
                    metadata={}) for i in range(n_sources)]
        _, prefix = emb.encode_query_with_kv(q)
        ids, _ = gen.rag_prompt(q, hits, 64, prefix)
        with torch.inference_mode():
            fresh = _best_ms(lambda: backbone.model.generate(**gen._generate_kwargs([ids], 1)), repeats)
        system = _best_ms(lambda: gen.generate_ids(ids, 1), repeats)
        reused = _best_ms(lambda: gen.generate_ids(ids, 1, prefix), repeats)
        rows.append(dict(prompt_tokens=len(ids), reused_tokens=len(prefix.ids), system_tokens=len(gen.system_prefix().ids),
                         fresh_ms=fresh, system_kv_ms=system, query_kv_ms=reused))
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    return dict(questions=len(rows), sources=n_sources, per_question=rows, **{f"median_{k}": v for k, v in med.items()},
                speedup_query_kv=round(med["fresh_ms"] / med["query_kv_ms"], 2))


def index_overhead_figures(backbone, embedder, n_docs: int, batch_size: int) -> dict:
    """Seconds to index n SciFact documents end to end, and to encode the same chunks alone."""
    from unified_rag import Document, UnifiedRAG

    from .data import scifact_texts

    docs = [Document(text=t, id=str(i)) for i, t in enumerate(scifact_texts(n_docs)[0])]
    rag = UnifiedRAG(backbone, embedder)
    t = time.perf_counter()
    rag.add_documents(docs, batch_size=batch_size, show_progress_bar=False)
    index_s = time.perf_counter() - t
    chunks = [r["text"] for r in rag.store.chunks(rag.index.ids().tolist())]
    t = time.perf_counter()
    embedder.encode_documents(chunks, batch_size=batch_size, show_progress_bar=False)
    encode_s = time.perf_counter() - t
    # Encoding tokenizes the chunks that the chunker already tokenized once: this is the most that
    # passing the chunker's ids through ("tokenize once") could save.
    t = time.perf_counter()
    embedder.tokenize(chunks, embedder.config.document_instruction, warn=False)
    tokenize_s = time.perf_counter() - t
    return dict(docs=len(docs), chunks=len(chunks), index_s=round(index_s, 1), encode_s=round(encode_s, 1),
                ratio=round(index_s / encode_s, 3), retokenize_s=round(tokenize_s, 2),
                retokenize_share=round(tokenize_s / encode_s, 4))


def decode_figures(backbone, n_prompts: int, new_tokens: int = 64, answer_tokens: int = 32, seed: int = 0) -> dict:
    """Batch-1 decode speed and answer quality: HF generate, the library's loop, and the loop on int8
    weights, on the same squad-rag oracle prompts, interleaved prompt by prompt."""
    from unified_rag.generator import GenerationConfig, Generator
    from unified_rag.types import Hit

    from .rag_qa import exact_match, load_squad_rag, token_f1

    ds, answers = load_squad_rag()
    qids = sorted(answers)
    qids = [qids[i] for i in np.random.default_rng(seed).permutation(len(qids))[:n_prompts]]
    sides = {"hf_generate": dict(decode="hf"), "library": {}, "library_int8": dict(int8_weights=True)}
    forced = {k: Generator(backbone, GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, **v))
              for k, v in sides.items()}
    natural = {k: Generator(backbone, GenerationConfig(max_new_tokens=answer_tokens, **v)) for k, v in sides.items()}
    natural["library_int8"]._int8 = forced["library_int8"]._int8  # one int8 copy
    prompts = []
    for q in qids:
        gold = next(iter(ds.qrels[q]))
        hit = Hit(rank=1, score=1.0, text=ds.corpus[gold], doc_id=gold, chunk_id=-1)
        prompts.append((q, forced["library"].rag_prompt(ds.queries[q], [hit], new_tokens)[0]))
    t = time.perf_counter()
    forced["library_int8"].generate_ids(prompts[0][1], 1)  # builds the int8 copy
    int8_build_s = time.perf_counter() - t
    for g in forced.values():  # warm-up
        g.generate_ids(prompts[0][1], 4)
    rows = []
    for q, ids in tqdm(prompts, desc="decode", unit="prompt"):
        row = dict(id=q, prompt_tokens=len(ids))
        for side in sides:
            t0 = time.perf_counter()
            natural[side].generate_ids(ids, 1)  # prefill and the first token
            t1 = time.perf_counter()
            text = forced[side].generate_ids(ids)
            t2 = time.perf_counter()
            answer = natural[side].generate_ids(ids)
            row[side] = dict(first_token_s=round(t1 - t0, 4), total_s=round(t2 - t1, 4),
                             decode_tokens_per_s=round((new_tokens - 1) / max(t2 - t1 - (t1 - t0), 1e-6), 2), text=text,
                             answer=answer, em=exact_match(answer, answers[q]), f1=round(token_f1(answer, answers[q]), 4))
        rows.append(row)
    out = dict(prompts=len(rows), new_tokens=new_tokens, answer_tokens=answer_tokens, seed=seed,
               median_prompt_tokens=float(np.median([r["prompt_tokens"] for r in rows])),
               int8_build_s=round(int8_build_s, 2), int8_mb=round(forced["library_int8"]._int8.nbytes / 2**20, 1))
    for side in sides:
        decode_s = sum(r[side]["total_s"] - r[side]["first_token_s"] for r in rows)
        out[side] = dict(decode_tokens_per_s=round((new_tokens - 1) * len(rows) / decode_s, 2),
                         end_to_end_tokens_per_s=round(new_tokens * len(rows) / sum(r[side]["total_s"] for r in rows), 2),
                         median_first_token_ms=round(1e3 * float(np.median([r[side]["first_token_s"] for r in rows])), 1),
                         exact_match=round(float(np.mean([r[side]["em"] for r in rows])), 4),
                         f1=round(float(np.mean([r[side]["f1"] for r in rows])), 4),
                         same_text_as_hf=sum(r[side]["text"] == r["hf_generate"]["text"] for r in rows))
        if side != "hf_generate":
            out[side]["over_hf"] = round(float(np.median([r[side]["decode_tokens_per_s"] / r["hf_generate"]["decode_tokens_per_s"]
                                                          for r in rows])), 3)
    out["per_prompt"] = rows
    return out


PROG = "unified-rag bench throughput"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="backbone (default: offline SmolLM2-135M-Instruct)")
    ap.add_argument("--embedder", default="mean")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256, help="chunk size in tokens")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--compare-hf", action="store_true", help="also time a plain HF forward on the same batches")
    ap.add_argument("--rounds", type=int, default=3, help="--compare-hf: alternating rounds of library and plain HF")
    ap.add_argument("--bound", action="store_true", help="with --compare-hf: also time the forward's matmuls and "
                    "attention alone, the ceiling of any speed-up over plain HF on these kernels")
    ap.add_argument("--compile", action="store_true", help="then compile the embedding forward and time it again")
    ap.add_argument("--index-overhead", type=int, metavar="N", help="also time indexing N SciFact docs against encoding alone")
    ap.add_argument("--kv-reuse", action="store_true", help="also time the first token with and without KV reuse")
    ap.add_argument("--sources", type=int, default=3, help="--kv-reuse: chunks in each prompt")
    ap.add_argument("--decode", type=int, metavar="N", help="also time batch-1 decoding on N squad-rag prompts")
    ap.add_argument("--new-tokens", type=int, default=64, help="--decode: tokens each timed call makes")
    args = ap.parse_args(argv)

    from embedders import load_embedder
    from unified_rag.backbone import Backbone

    backbone = Backbone.from_pretrained(args.model, dtype=args.dtype)
    embedder = load_embedder(args.embedder, backbone)
    dev = backbone.device
    chunks = demo_chunks(backbone.tokenizer, args.seq_len)[: args.batch_size * args.batches]
    n_tokens = sum(len(ids) for ids, _, _ in embedder.tokenize(chunks, None))
    embedder.encode(chunks[: args.batch_size], batch_size=args.batch_size)  # warm-up
    dt = _timed_encode(embedder, chunks, args.batch_size)

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
    if args.compare_hf:
        # Rounds alternate library, plain HF (and the bound), so a machine whose speed drifts during the
        # run (a shared host) slows all of them alike; the ratios are the medians of each round's.
        lora = getattr(getattr(embedder, "config", None), "lora_r", 0) > 0
        rounds = []
        for _ in range(args.rounds):
            lib = _timed_encode(embedder, chunks, args.batch_size)
            hf = plain_hf_seconds(backbone, embedder, chunks, args.batch_size)
            core = matmul_attention_seconds(backbone, embedder, chunks, args.batch_size) if args.bound else None
            unmerged = _timed_encode(embedder, chunks, args.batch_size, merge=False) if lora else None
            rounds.append(dict(library_s=round(lib, 3), plain_hf_s=round(hf, 3),
                               **({"matmul_attention_s": round(core, 3)} if core else {}),
                               **({"library_peft_lora_s": round(unmerged, 3)} if unmerged else {})))
        med = lambda f: round(float(np.median([f(x) for x in rounds])), 3)  # noqa: E731
        r.update(rounds=rounds, plain_hf_s=med(lambda x: x["plain_hf_s"]),
                 library_over_hf=med(lambda x: x["plain_hf_s"] / x["library_s"]))
        print(f"plain HF forward, same batches, {args.rounds} alternating rounds: library "
              f"{r['library_over_hf']:.2f}x (median; per round "
              f"{', '.join(format(x['plain_hf_s'] / x['library_s'], '.2f') for x in rounds)})")
        if lora:
            r["peft_lora_over_hf"] = med(lambda x: x["plain_hf_s"] / x["library_peft_lora_s"])
            r["merged_over_peft_lora"] = med(lambda x: x["library_peft_lora_s"] / x["library_s"])
            print(f"the same library with peft's own (unmerged) LoRA forward: {r['peft_lora_over_hf']:.2f}x plain HF; "
                  f"merging per layer call is {r['merged_over_peft_lora']:.2f}x faster (medians)")
        if args.bound:
            r["ceiling_over_hf"] = med(lambda x: x["plain_hf_s"] / x["matmul_attention_s"])
            print(f"its matmuls and attention alone: no library on these kernels can pass {r['ceiling_over_hf']:.2f}x "
                  f"plain HF (median; everything else the forward does would have to cost nothing)")
    if args.compile:
        t = time.perf_counter()
        backbone.compile()
        for n in (args.batch_size, args.batch_size // 2 + 1):  # two batch shapes: the dynamic graph is built
            embedder.encode(chunks[:n], batch_size=n)
        r["compile_s"] = round(time.perf_counter() - t, 1)
        dc = _timed_encode(embedder, chunks, args.batch_size)
        r.update(compiled_s=round(dc, 3), compiled_tokens_per_s=round(n_tokens / dc, 1), compiled_over_eager=round(dt / dc, 3))
        line = f"compiled ({r['compile_s']:.0f} s to compile): {dc:.1f} s, {n_tokens / dc:,.0f} tokens/s, {dt / dc:.2f}x eager"
        if args.compare_hf:
            r["compiled_over_hf"] = round(r["plain_hf_s"] / dc, 3)
            line += f", {r['compiled_over_hf']:.2f}x the plain HF forward"
        print(line)
    if args.index_overhead:
        r["index_overhead"] = o = index_overhead_figures(backbone, embedder, args.index_overhead, args.batch_size)
        print(f"indexing {o['docs']} SciFact docs ({o['chunks']} chunks): {o['index_s']:.0f} s end to end, "
              f"{o['encode_s']:.0f} s to encode the same chunks alone ({o['ratio']:.3f}x); re-tokenizing them "
              f"takes {o['retokenize_s']:.2f} s ({100 * o['retokenize_share']:.2f}% of the encode)")
    if args.kv_reuse:
        r["kv_reuse"] = k = kv_reuse_figures(backbone, chunks, args.sources)
        print(f"time to first token, median of {k['questions']} prompts of ~{k['median_prompt_tokens']:.0f} tokens: "
              f"fresh prefill {k['median_fresh_ms']:.0f} ms, system turn's KV ({k['median_system_tokens']:.0f} tokens) "
              f"{k['median_system_kv_ms']:.0f} ms, query pass's KV ({k['median_reused_tokens']:.0f} tokens) "
              f"{k['median_query_kv_ms']:.0f} ms ({k['speedup_query_kv']:.2f}x)")
    if args.decode:
        r["decode"] = d = decode_figures(backbone, args.decode, args.new_tokens)
        print(f"decode at batch 1, {d['prompts']} squad-rag prompts of ~{d['median_prompt_tokens']:.0f} tokens, "
              f"{d['new_tokens']} new tokens each; answers of <= {d['answer_tokens']} tokens scored on gold answers:")
        for side in ("hf_generate", "library", "library_int8"):
            x = d[side]
            print(f"  {side:13s} {x['decode_tokens_per_s']:5.1f} tokens/s after the first"
                  + (f" ({x['over_hf']:.2f}x HF, median per prompt)" if "over_hf" in x else "")
                  + f"; first token {x['median_first_token_ms']:.0f} ms; EM {x['exact_match']:.3f} F1 {x['f1']:.3f}; "
                  f"{x['same_text_as_hf']}/{d['prompts']} texts identical to HF's")
        print(f"  int8 copy: {d['int8_mb']:.0f} MB, built in {d['int8_build_s']:.1f} s")
    if args.json:
        from unified_rag.io import atomic_write_json

        atomic_write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
