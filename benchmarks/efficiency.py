"""Efficiency, all from one run: encode throughput and MFU, pipeline memory, answer latency, index scale.

Memory is a per-process peak, so every measured pipeline runs in its own subprocess
(`python -m benchmarks.efficiency WORKER JSON-ARGS` prints one JSON line). The matmul peak that MFU
is measured against is taken in the parent, in the same run, with benchmarks.throughput's helper.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from unified_rag.errors import InputError

from .data import scifact_texts

LAYOUTS = {"a": "UnifiedRAG: one backbone embeds and generates",
           "b": "backbone loaded twice: encoder + generator (LLM2Vec-Gen reference layout)",
           "c": "sentence-transformers embedder (all-MiniLM-L6-v2) + generator"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))  # ms


def _gpu_peak_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


# --- workers: each runs in a fresh subprocess -----------------------------------------------------------
def worker_encode(method: str, model=None, dtype="auto", max_length=256, batch_size=32, n_docs=256) -> dict:
    """Encode n SciFact docs with one method: tokens/s, docs/s, peak memory, parameter bytes."""
    from .baselines import load_methods, method_name

    m = load_methods(method, model=model, dtype=dtype, max_length=max_length)[0]
    if not hasattr(m, "encode"):
        raise InputError(f"{method} is not a dense encoder")
    docs, _ = scifact_texts(n_docs)
    if hasattr(m, "tokenize"):  # project embedder: count exactly the tokens it feeds the model
        n_tokens = sum(len(ids) for ids, _, _ in m.tokenize(docs, m.config.document_instruction))
        params = m.backbone.param_bytes() + sum(t.numel() * t.element_size() for t in m.adapter_state().values())
        info = dict(backbone=m.backbone.name, dtype=str(m.backbone.dtype).removeprefix("torch."),
                    seq_len_mean=n_tokens / len(docs), config=m.backbone.model.config.to_dict())
    else:
        tok = m.model.tokenizer
        n_tokens = sum(min(len(ids), m.max_length) for ids in tok(docs)["input_ids"])
        params = sum(p.numel() * p.element_size() for p in m.model.parameters())
        info = dict(dtype=str(next(m.model.parameters()).dtype).removeprefix("torch."))
    m.encode_documents(docs[:batch_size], batch_size=batch_size)  # warm-up
    t = time.perf_counter()
    m.encode_documents(docs, batch_size=batch_size, show_progress_bar=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return dict(name=method_name(m), fingerprint=m.fingerprint, docs=len(docs), tokens=n_tokens, seconds=dt,
                tokens_per_s=n_tokens / dt, docs_per_s=len(docs) / dt, peak_rss_mb=_peak_rss_mb(),
                gpu_peak_mb=_gpu_peak_mb(), param_mb=params / 2**20, **info)


def resident_param_bytes(*modules) -> int:
    """Bytes of the distinct parameter storages behind `modules` (two names for one tensor count once)."""
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            s = p.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def worker_pipeline(layout: str, embedder="auto", model=None, dtype="auto", n_docs=200, n_queries=10,
                    max_new_tokens=64) -> dict:
    """Build one layout, index n SciFact docs, then time retrieval, answer() and time to first token."""
    from unified_rag import Backbone, UnifiedRAG
    from unified_rag.index import VectorIndex

    from .baselines import SentenceTransformerEmbedder, minilm_path

    backbone = Backbone.from_pretrained(model, dtype=dtype)
    rag = UnifiedRAG(backbone, __import__("embedders").load_embedder(embedder if layout != "c" else "mean", backbone))
    if layout == "b":  # a second copy of the same weights serves as the encoder, as in the reference code
        encoder = Backbone.from_pretrained(model, dtype=dtype)
        rag.embedder = __import__("embedders").load_embedder(embedder, encoder)
    elif layout == "c":  # swap in an outside embedder; the same indexing and answering code runs
        st = SentenceTransformerEmbedder(minilm_path())
        rag.embedder, rag.index = st, VectorIndex(st.dim, rag.index_config)
    elif layout != "a":
        raise InputError(f"unknown layout {layout!r}")
    # What the pipeline's parts actually hold, each tensor storage counted once: shared weights count once.
    emb = rag.embedder
    params = resident_param_bytes(rag.generator.backbone.model, emb.backbone.model if hasattr(emb, "backbone") else emb.model)
    docs, queries = scifact_texts(n_docs, n_queries)
    rag.add_documents(docs, show_progress_bar=False)
    ret, ans, ttft = [], [], []
    for q in queries:
        t = time.perf_counter()
        rag.retrieve(q, k=5, mode="dense")  # the committed figures are dense; the default is now hybrid
        ret.append(time.perf_counter() - t)
        t = time.perf_counter()
        rag.answer(q, k=3, max_new_tokens=max_new_tokens, retrieval="dense")
        ans.append(time.perf_counter() - t)
        t = time.perf_counter()
        stream = rag.stream_answer(q, k=3, max_new_tokens=max_new_tokens, retrieval="dense")
        next(iter(stream), None)
        ttft.append(time.perf_counter() - t)
        for _ in stream:  # drain, so the generation thread ends before the next query
            pass
    return dict(layout=layout, description=LAYOUTS[layout], param_mb=params / 2**20, peak_rss_mb=_peak_rss_mb(),
                gpu_peak_mb=_gpu_peak_mb(), docs=len(docs), chunks=rag.index.ntotal, queries=len(queries),
                max_new_tokens=max_new_tokens, retrieve_p50_ms=_pct(ret, 50), retrieve_p95_ms=_pct(ret, 95),
                answer_p50_ms=_pct(ans, 50), answer_p95_ms=_pct(ans, 95), ttft_p50_ms=_pct(ttft, 50),
                ttft_p95_ms=_pct(ttft, 95), device=str(backbone.device))


def worker_index(kind: str, n: int, dim: int, n_queries: int = 200, seed: int = 0,
                 ef_sweep: list[int] | None = None) -> dict:
    """Build a FAISS index of the library's config over n synthetic vectors; recall@10 against exact.
    `ef_sweep` (hnsw): also recall@10 and queries/s at each efSearch, on the same graph."""
    import faiss
    import psutil

    from unified_rag.index import IndexConfig, VectorIndex

    from .metrics import evaluate

    rng = np.random.default_rng(seed)
    # Clustered data (a Gaussian mixture), closer to real embeddings than uniform noise, where IVF
    # and HNSW recall would look needlessly bad.
    centers = rng.standard_normal((max(16, n // 1000), dim), dtype=np.float32)
    X = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = X[rng.choice(n, n_queries, replace=False)] + 0.1 * rng.standard_normal((n_queries, dim), dtype=np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(dim)
    exact.add(X)
    _, truth = exact.search(Q, 10)
    del exact
    rss0 = psutil.Process().memory_info().rss
    t = time.perf_counter()
    index = VectorIndex(dim, IndexConfig(kind=kind, nlist=min(1024, max(1, n // 39))))
    index.add(np.arange(n, dtype=np.int64), X)
    build = time.perf_counter() - t
    mem = (psutil.Process().memory_info().rss - rss0) / 2**20
    qrels = {str(i): {str(d): 1 for d in row} for i, row in enumerate(truth)}

    def measure(**search_params) -> tuple[float, float]:
        index.search(Q[:10], 10, **search_params)  # warm-up
        t = time.perf_counter()
        _, ids = index.search(Q, 10, **search_params)
        qps = n_queries / (time.perf_counter() - t)
        run = {str(i): {str(d): float(10 - r) for r, d in enumerate(row) if d >= 0} for i, row in enumerate(ids)}
        return qps, evaluate(qrels, run, "recall@10")["recall@10"]

    qps, recall = measure()
    out = dict(index=f"{kind} {n:,}", kind=kind, n=n, dim=dim, build_s=build, qps=qps, recall_at_10=recall,
               index_mb=mem, threads=faiss.omp_get_max_threads())
    if ef_sweep and kind == "hnsw":
        out["sweep"] = [dict(index=f"hnsw {n:,} ef {ef}", n=n, ef_search=ef, qps=q, recall_at_10=r)
                        for ef in ef_sweep for q, r in [measure(ef_search=ef)]]
    return out


WORKERS = {"encode": worker_encode, "pipeline": worker_pipeline, "index": worker_index}


def spawn(worker: str, timeout: float | None = None, **kw) -> dict:
    """Run one worker in a fresh interpreter, so its peak memory is its own."""
    cmd = [sys.executable, "-m", "benchmarks.efficiency", worker, json.dumps(kw)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"efficiency worker {worker} {kw} failed: {tail}")
    return json.loads(lines[-1])


def run_efficiency(methods: str = "auto,minilm", *, model=None, dtype="auto", max_length=256, batch_size=32,
                   n_docs=256, n_queries=10, max_new_tokens=64, index_sizes=(100_000, 1_000_000),
                   pipeline_docs=200, matmul_n=4096, seed=0) -> dict:
    from types import SimpleNamespace

    from .throughput import forward_flops_per_token, matmul_peak

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peaks = {"bf16": matmul_peak(torch.bfloat16, dev, n=matmul_n), "fp32": matmul_peak(torch.float32, dev, n=matmul_n)}
    specs = [s.strip() for s in methods.split(",") if s.strip()]
    out, dim = {}, None
    for spec in tqdm(specs, desc="encode throughput", unit="method"):
        r = spawn("encode", method=spec, model=model, dtype=dtype, max_length=max_length, batch_size=batch_size,
                  n_docs=n_docs)
        cfg = r.pop("config", None)
        metrics = {k: r[k] for k in ("tokens_per_s", "docs_per_s", "peak_rss_mb", "param_mb")}
        if cfg is not None:  # backbone embedders: model FLOPs utilisation against the measured peak
            config = SimpleNamespace(**cfg)  # the fields forward_flops_per_token reads
            flops = forward_flops_per_token(config, r["seq_len_mean"]) * r["tokens_per_s"]
            metrics["mfu"] = flops / peaks["bf16" if r["dtype"] in ("bfloat16", "float16") else "fp32"]
            dim = dim or cfg["hidden_size"]
        out[r["name"]] = dict(name=r["name"], kind=spec, fingerprint=r["fingerprint"], metrics=metrics, detail=r)
    backbone_spec = next((s for s in specs if s not in ("minilm", "bm25") and not s.startswith("st:")), "auto")
    pipelines = {}
    for layout in tqdm(LAYOUTS, desc="pipelines", unit="layout"):
        pipelines[layout] = spawn("pipeline", layout=layout, embedder=backbone_spec, model=model, dtype=dtype,
                                  n_docs=pipeline_docs, n_queries=n_queries if layout == "a" else 1,
                                  max_new_tokens=max_new_tokens)
    if dim is None:
        from unified_rag.backbone import Backbone

        dim = Backbone.from_pretrained(model, dtype=dtype).hidden_size
    index = [spawn("index", kind=kind, n=n, dim=dim, seed=seed)
             for n in tqdm(index_sizes, desc="index scale", unit="size") for kind in ("flat", "ivf", "hnsw")]
    return dict(suite="efficiency", title="Efficiency", main_metric="tokens_per_s", methods=out,
                matmul_peak_tflops={k: v / 1e12 for k, v in peaks.items()}, device=str(dev),
                tables={"Pipelines": list(pipelines.values()), "Index scale": index},
                table_plots={"Pipelines": ("peak_rss_mb", "layout"), "Index scale": ("qps", "index")},
                notes=[f"encode: {n_docs} SciFact docs, max_length {max_length}, batch {batch_size}; every figure "
                       "from a fresh subprocess", "pipelines: (a) " + LAYOUTS["a"] + "; (b) " + LAYOUTS["b"] +
                       "; (c) " + LAYOUTS["c"] + f". Latency over {n_queries} SciFact claims on {pipeline_docs} docs "
                       f"(layout a), {max_new_tokens} new tokens", "index scale: synthetic clustered unit vectors"])


def run_index_scale(sizes=(100_000, 1_000_000), kinds=("flat", "ivf", "hnsw"), dim: int = 576,
                    ef_sweep=(64, 128, 256, 512, 1024), n_queries: int = 200, seed: int = 0) -> dict:
    """FAISS alone at scale: build time, memory, queries/s and recall@10 for each index kind and size,
    plus HNSW's recall against efSearch on each graph (the data behind the ef_search default)."""
    rows = [spawn("index", kind=kind, n=n, dim=dim, n_queries=n_queries, seed=seed, ef_sweep=list(ef_sweep))
            for n in tqdm(sizes, desc="index scale", unit="size") for kind in kinds]
    sweep = [r for row in rows for r in row.pop("sweep", [])]
    return dict(suite="index-scale", title="FAISS index scale", main_metric="recall_at_10", methods={},
                tables={"Index scale": rows, "HNSW efSearch": sweep},
                table_plots={"Index scale": ("qps", "index"), "HNSW efSearch": ("recall_at_10", "index")},
                notes=[f"synthetic clustered unit vectors, dim {dim}, {n_queries} queries, recall@10 against exact "
                       "search; HNSW M 32, efConstruction 200 (the library's defaults); IVF nlist n/39 <= 1,024, "
                       "nprobe 16"])


if __name__ == "__main__":
    print(json.dumps(WORKERS[sys.argv[1]](**json.loads(sys.argv[2]))))
