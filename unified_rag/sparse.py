"""Sparse retrieval over the chunk store (BM25 through bm25s), and the fusion that makes hybrid search.

The BM25 index is derived from the store's chunk texts and never saved on its own: a saved index dir
holds the store, so sparse search after `load()` sees exactly the chunks the dense index holds, and
no second file can disagree with it. It is rebuilt lazily, at the first sparse or hybrid query after
an add or delete; bm25s indexes SciFact's 5,183 documents in under a second.

Hybrid search is weighted reciprocal rank fusion (Cormack et al., 2009): a chunk scores
w / (k + dense rank) + (1 - w) / (k + BM25 rank), each ranking cut at `depth`. RRF needs no score
calibration between cosine similarities and BM25 scores, which live on unrelated scales. The dense
weight w is calibrated on held-out training pairs, never on an evaluation set (benchmarks.calibration).
"""
from __future__ import annotations

import logging

import numpy as np

# "Plain Okapi BM25", the data README's reference: k1=0.9, b=0.4 (Anserini's defaults), lowercase
# alphanumeric tokens, bm25s's short English stop-word list, no stemming. bm25s's default token
# pattern (\w\w+) drops one-character tokens, which SciFact claims lean on ("1", "2", "b").
BM25_K1, BM25_B, BM25_TOKENS = 0.9, 0.4, r"[a-z0-9]+"
RRF_K = 60  # the constant of the RRF paper; larger flattens the contribution of the top ranks
# Best of the grid on held-out training pairs for the shipped `auto` adapter:
# benchmarks/results/cpu-2core/calibration (unified-rag bench calibrate -e auto --n-docs 1000).
HYBRID_DENSE_WEIGHT = 0.8


def tokenize(texts: list[str]):
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets itself to DEBUG on import
    return bm25s.tokenize(texts, lower=True, token_pattern=BM25_TOKENS, stopwords="en", show_progress=False)


class SparseIndex:
    """BM25 over (id, text) pairs. `search` returns ids and scores, best first; zero scores are dropped."""

    def __init__(self, k1: float = BM25_K1, b: float = BM25_B):
        self.k1, self.b = k1, b
        self._bm25, self._ids = None, np.zeros(0, dtype=np.int64)

    @property
    def built(self) -> bool:
        return self._bm25 is not None

    def invalidate(self) -> None:
        self._bm25 = None

    def build(self, ids: list[int], texts: list[str]) -> None:
        import bm25s

        bm25 = bm25s.BM25(k1=self.k1, b=self.b)
        if texts:
            bm25.index(tokenize(texts), show_progress=False)
        self._bm25, self._ids = bm25, np.asarray(ids, dtype=np.int64)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self._ids))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        idx, scores = self._bm25.retrieve(tokenize([query]), k=k, show_progress=False, n_threads=1)
        keep = scores[0] > 0  # no query term in the chunk: not a match at all
        return self._ids[idx[0][keep]], scores[0][keep].astype(np.float32)


def reciprocal_rank_fusion(rankings: list[list], k: int = RRF_K, weights: tuple[float, ...] | None = None) -> list[tuple]:
    """(id, fused score) best first, from rankings of ids (each best first): sum of w / (k + rank).
    Ties keep first-seen order."""
    fused: dict = {}
    for ranking, w in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for rank, i in enumerate(ranking, 1):
            fused[i] = fused.get(i, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def hybrid_fusion(dense: list, sparse: list, dense_weight: float = HYBRID_DENSE_WEIGHT, k: int = RRF_K) -> list[tuple]:
    """Weighted RRF of a dense and a sparse ranking of ids: what hybrid search returns."""
    return reciprocal_rank_fusion([dense, sparse], k, (dense_weight, 1.0 - dense_weight))
