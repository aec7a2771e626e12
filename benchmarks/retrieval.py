"""Retrieval quality (BEIR SciFact: nDCG@10, recall@100, MRR@10) and STS-B (Spearman of cosine).

`search` is the one search path for every suite: BM25 through bm25s, dense methods by exact inner
product over cached, L2-normalised vectors (cosine), so index approximations never blur a metric.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .cache import encode
from .data import RetrievalSet, load_beir, load_stsb
from .metrics import RETRIEVAL, evaluate

CURVE_KS = (1, 5, 10, 20, 50, 100)


def describe(method) -> dict:
    from .baselines import method_name

    d = dict(name=method_name(method), kind=method.kind, fingerprint=method.fingerprint)
    cfg = getattr(method, "config", None)
    if cfg is not None:
        bb = method.backbone
        d.update(max_length=cfg.max_length, backbone=bb.name, backbone_fingerprint=bb.fingerprint,
                 dtype=str(bb.dtype).removeprefix("torch."), device=str(bb.device))
    elif hasattr(method, "max_length"):
        d.update(max_length=method.max_length)
    return d


def search(method, corpus: dict[str, str] | list[dict[str, str]], queries: dict[str, str], k: int = 100, *,
           excluded: dict[str, set[str]] | None = None, cache: str | None = None, batch_size: int = 32,
           query_instruction: str | None = None) -> tuple[dict[str, dict[str, float]], dict]:
    """Top-k run {query id: {doc id: score}} and encode info (cache hits, seconds). `corpus` may come
    in parts (e.g. harmful chunks + distractors): each part is encoded and cached on its own, so a
    part shared with another suite is encoded once. `query_instruction` replaces a backbone
    embedder's own (a task's published instruction)."""
    parts = corpus if isinstance(corpus, (list, tuple)) else [corpus]
    corpus = {i: t for p in parts for i, t in p.items()}
    doc_ids, qids = list(corpus), list(queries)
    excluded = excluded or {}
    if hasattr(method, "fuse"):  # hybrid: both rankings through this same function, then fused
        depth = max(k, method.depth)
        dense, info = search(method.dense, parts, queries, depth, excluded=excluded, cache=cache, batch_size=batch_size,
                             query_instruction=query_instruction)
        sparse, _ = search(method.sparse, parts, queries, depth, excluded=excluded)
        return method.fuse(dense, sparse, k), info
    if hasattr(method, "search"):
        return method.search(doc_ids, list(corpus.values()), queries, k, excluded), {}
    encoded = [encode(method, list(p.values()), "document", root=cache, batch_size=batch_size) for p in parts if p]
    D, dinfo = np.concatenate([v for v, _ in encoded]), [i for _, i in encoded]
    Q, qinfo = encode(method, [queries[q] for q in qids], "query", root=cache, batch_size=batch_size,
                      instruction=query_instruction)
    pos = {d: i for i, d in enumerate(doc_ids)}
    kk = min(k, len(doc_ids))
    run = {}
    for s in range(0, len(qids), 256):  # blocks of queries keep the score matrix small on big corpora
        S = Q[s:s + 256] @ D.T
        for r, q in enumerate(qids[s:s + 256]):
            drop = [pos[d] for d in excluded.get(q, ()) if d in pos]
            if drop:
                S[r, drop] = -np.inf
        top = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        for r, q in enumerate(qids[s:s + 256]):
            row = top[r][np.argsort(-S[r, top[r]], kind="stable")]
            run[q] = {doc_ids[i]: float(S[r, i]) for i in row if np.isfinite(S[r, i])}
    return run, dict(documents=dinfo, queries=qinfo)


def evaluate_set(methods: list, ds: RetrievalSet, metrics=RETRIEVAL, *, curve: str | None = "recall",
                 cache: str | None = None, batch_size: int = 32, k: int = 100) -> dict:
    """Per method: metrics, a top-k curve (e.g. recall@1..100), identity and encode info."""
    out = {}
    for m in tqdm(methods, desc=f"{ds.name}", unit="method", disable=len(methods) < 2):
        run, info = search(m, ds.corpus, ds.queries, k, excluded=ds.excluded, cache=cache, batch_size=batch_size,
                           query_instruction=ds.query_instruction)
        names = list(metrics) + ([f"{curve}@{c}" for c in CURVE_KS if c <= k] if curve else [])
        scores = evaluate(ds.qrels, run, names)
        d = describe(m)
        d.update(metrics={n: scores[n] for n in metrics}, encode=info)
        if curve:
            d["curves"] = {curve: {c: scores[f"{curve}@{c}"] for c in CURVE_KS if c <= k}}
        out[d["name"]] = d
    return out


def run_beir(methods: list, data=None, *, hf: str | None = None, n_queries: int | None = None, cache=None,
             batch_size: int = 32, max_docs: int | None = None, seed: int = 0, task_instruction: bool = True) -> dict:
    """BEIR retrieval. With `task_instruction`, backbone embedders take the task's published query
    instruction (data.TASK_INSTRUCTIONS) instead of their generic one."""
    ds = load_beir(data, hf=hf).subset(n_queries).sample_corpus(max_docs, seed)
    if not task_instruction:
        ds.query_instruction = None
    return dict(suite="retrieval", title=f"Retrieval quality: {ds.name}", dataset=ds.describe(),
                main_metric="ndcg@10", methods=evaluate_set(methods, ds, cache=cache, batch_size=batch_size))


def run_stsb(methods: list, data=None, *, hf: str | None = None, split: str = "test", cache=None,
             batch_size: int = 32) -> dict:
    """Spearman correlation between gold scores and the cosine of the two sentences' embeddings."""
    from scipy.stats import spearmanr

    pairs, gold, h = load_stsb(data, hf=hf, split=split)
    sentences = sorted({s for p in pairs for s in p})
    pos = {s: i for i, s in enumerate(sentences)}
    out = {}
    for m in methods:
        if not hasattr(m, "encode"):
            continue  # BM25 scores query-document pairs, not sentence similarity
        V, info = encode(m, sentences, "text", root=cache, batch_size=batch_size)
        cos = [float(V[pos[a]] @ V[pos[b]]) for a, b in pairs]
        d = describe(m)
        d.update(metrics={"spearman": float(spearmanr(cos, gold).statistic)}, encode=info)
        out[d["name"]] = d
    return dict(suite="stsb", title=f"STS Benchmark ({split})", main_metric="spearman",
                dataset=dict(name="stsb", split=split, pairs=len(pairs), hash=h, source=str(hf or data or "stsb")),
                methods=out)
