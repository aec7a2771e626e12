"""Calibration on held-out *training* pairs, never on an evaluation set: the hybrid fusion weight and
the relevance cut below which `answer()` treats a source as irrelevant (and, with none left, says it
cannot answer).

The held-out set is exactly the pairs a trainer config keeps out of training (`val_examples`, the
last ones of its seeded order): their queries, their positives, and a seeded draw of other training
passages as the rest of the corpus. Each setting of the fusion is scored by nDCG@10 there. The best
of that grid suits queries like the training pairs; the library's default
(`unified_rag.sparse.HYBRID_DENSE_WEIGHT`) stays at the even 0.5, because these pairs share the
adapter's training distribution and overrate its dense side (see the constant's comment).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

from unified_rag.io import text_hash

from .baselines import Hybrid
from .data import RetrievalSet
from .metrics import RETRIEVAL, evaluate
from .retrieval import describe, search

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


def held_out_set(config: str | os.PathLike, n_docs: int = 2000, seed: int = 0) -> RetrievalSet:
    """The trainer config's held-out pairs as a retrieval set over `n_docs` training passages."""
    from trainers.data import read_pairs, subsample

    cfg = json.loads(Path(config).read_text())
    n_val = cfg.get("val_examples") or 0
    if not n_val:
        raise ValueError(f"{config} holds nothing out (val_examples is 0): nothing to calibrate on")
    rows = subsample(read_pairs(cfg["pairs"]), cfg.get("max_examples"), cfg.get("seed", 0))
    val, pool = rows[-n_val:], rows[:-n_val]

    def pid(text: str) -> str:
        return text_hash(text)

    corpus = {pid(r[2]): r[2] for r in val}
    for r in random.Random(seed).sample(pool, len(pool)):
        if len(corpus) >= n_docs:
            break
        corpus.setdefault(pid(r[2]), r[2])
    queries = {f"q{i}": r[1] for i, r in enumerate(val)}
    qrels = {f"q{i}": {pid(r[2]): 1} for i, r in enumerate(val)}
    return RetrievalSet(f"held-out train pairs ({n_val} queries, {len(corpus)} passages)", corpus, queries, qrels,
                        source=str(config))


def calibrate_fusion(dense_method, ds: RetrievalSet, *, depth: int = 100, cache=None, batch_size: int = 32) -> dict:
    """nDCG@10 of the benchmarks' hybrid at every dense weight in WEIGHTS (0 = BM25 alone, 1 = dense alone)."""
    hybrids = {w: Hybrid(dense_method, depth, dense_weight=w) for w in WEIGHTS}
    sparse_method = hybrids[0.0].sparse
    dense, info = search(dense_method, ds.corpus, ds.queries, depth, cache=cache, batch_size=batch_size)
    sparse, _ = search(sparse_method, ds.corpus, ds.queries, depth)
    grid = [dict(dense_weight=w, **evaluate(ds.qrels, h.fuse(dense, sparse, 100), RETRIEVAL)) for w, h in hybrids.items()]
    cut = calibrate_relevance(dense, ds.qrels)
    best = max(grid, key=lambda r: (r["ndcg@10"], -abs(r["dense_weight"] - 0.5)))  # ties: nearer even fusion
    methods = {"bm25": dict(describe(sparse_method), metrics=evaluate(ds.qrels, sparse, RETRIEVAL)),
               "dense": dict(describe(dense_method), metrics=evaluate(ds.qrels, dense, RETRIEVAL), encode=info),
               f"hybrid (z-score fusion, dense weight {best['dense_weight']})": dict(
                   kind="hybrid", metrics={m: best[m] for m in RETRIEVAL})}
    return dict(suite="calibration", title="Hybrid fusion weight on held-out training pairs",
                dataset=ds.describe(), methods=methods, best_dense_weight=best["dense_weight"],
                best_min_relevance=cut["best"]["min_relevance"],
                tables={"Fusion grid": grid, "Relevance cut": cut["grid"]},
                table_plots={"Fusion grid": ("ndcg@10", "dense_weight"), "Relevance cut": ("balanced", "min_relevance")},
                notes=[f"Convex combination of z-normalised scores: w·z(cosine) + (1 - w)·z(BM25), each list {depth} deep. "
                       "The best w here suits queries like the training pairs; the library's default stays 0.5. "
                       "No evaluation set is used.",
                       "Relevance cut: 'answered' is the share of queries whose best passage reaches the cut with "
                       "every passage present; 'declined' the share whose best passage falls below it once the "
                       "query's own passage is left out; 'gold_kept' the share of own passages that reach it. The "
                       f"default cut is the highest that keeps 95% of them: {cut['best']['min_relevance']} (answered "
                       f"{cut['best']['answered']:.2f}, declined {cut['best']['declined']:.2f}). The best balanced "
                       f"accuracy, (answered + declined) / 2, is {cut['balanced']['balanced']:.2f} at "
                       f"{cut['balanced']['min_relevance']}: the passages left once the own one is out are often "
                       "on the same topic (SQuAD sentences of one article), so no cut separates the two cases well."])


def calibrate_relevance(dense: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], steps: int = 41,
                        keep: float = 0.95) -> dict:
    """The relevance cut: the highest cosine that still keeps `keep` of the queries' own passages, so
    that it drops sources that are plainly unrelated but almost never a relevant one. Beside it, how
    well each cut tells 'the index holds this query's passage' from 'it does not', by the best cosine
    each query finds with and without its own passage (a dense run of cosines, deep enough for both)."""
    with_gold = np.array([max(dense[q].values()) for q in qrels])
    without = np.array([max((s for d, s in dense[q].items() if d not in qrels[q]), default=-1.0) for q in qrels])
    gold = np.array([max((dense[q].get(d, -1.0) for d in qrels[q])) for q in qrels])  # -1: below the run's depth
    lo, hi = float(min(with_gold.min(), without.min())), float(max(with_gold.max(), without.max()))
    grid = []
    for t in dict.fromkeys(round(float(v), 3) for v in np.linspace(lo, hi, steps)):
        answered, declined = float((with_gold >= t).mean()), float((without < t).mean())
        grid.append(dict(min_relevance=t, answered=answered, declined=declined, gold_kept=float((gold >= t).mean()),
                         balanced=(answered + declined) / 2))
    keeping = [r for r in grid if r["gold_kept"] >= keep] or grid[:1]
    return dict(grid=grid, best=keeping[-1], balanced=max(grid, key=lambda r: (r["balanced"], -r["min_relevance"])))
