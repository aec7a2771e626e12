"""Sparse retrieval over the chunk store (BM25 through bm25s), and the fusion that makes hybrid search.

The BM25 index is derived from the store's chunk texts and never saved on its own: a saved index dir
holds the store, so sparse search after `load()` sees exactly the chunks the dense index holds, and
no second file can disagree with it. It is rebuilt lazily, at the first sparse or hybrid query after
an add or delete; bm25s indexes SciFact's 5,183 documents in under a second.

Hybrid search is a convex combination of z-normalised scores: each ranking is cut at `depth`, its
scores are standardised over that list (mean 0, sd 1), and a chunk scores w·z_dense + (1 − w)·z_bm25,
where a chunk missing from one list takes (just below) that list's lowest z. Normalising puts cosines and BM25
scores, which live on unrelated scales, on one scale. Bruch et al. (2023, "An analysis of fusion
functions for hybrid retrieval") find this convex combination more accurate than reciprocal rank
fusion, in and out of domain, because RRF throws away how far apart the scores are; our measurements
agree (docs/benchmarks.md). The default dense weight w is 0.5 (see HYBRID_DENSE_WEIGHT).
"""
from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

# Okapi BM25 with Anserini's defaults (k1=0.9, b=0.4), lowercase alphanumeric tokens, bm25s's short
# English stop-word list, and the English Snowball stemmer (PyStemmer), as Anserini and Elasticsearch's
# English analyser stem. bm25s's default token pattern (\w\w+) drops one-character tokens, which
# SciFact claims lean on ("1", "2", "b"). `stem=False` is the data README's "plain Okapi BM25".
BM25_K1, BM25_B, BM25_TOKENS = 0.9, 0.4, r"[a-z0-9]+"
BM25_STEMMER = "english"
# Equal weight on the two z-scores: the parameter-free choice. `unified-rag bench calibrate` finds the
# best weight on held-out training pairs (0.7 for the shipped adapter), but those pairs come from the
# adapter's own training distribution, where its dense side is at its strongest; out of that domain
# the calibrated weight fell below BM25 alone (docs/benchmarks.md, "Hybrid fusion"). Set
# `rag.hybrid_dense_weight` to a calibrated value for queries like your own training pairs.
HYBRID_DENSE_WEIGHT = 0.5


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer(BM25_STEMMER)


def tokenize(texts: list[str], stem: bool = True):
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets itself to DEBUG on import
    return bm25s.tokenize(texts, lower=True, token_pattern=BM25_TOKENS, stopwords="en",
                          stemmer=_stemmer() if stem else None, show_progress=False)


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


def hybrid_fusion(dense: list[tuple], sparse: list[tuple], dense_weight: float = HYBRID_DENSE_WEIGHT) -> list[tuple]:
    """(id, fused score) best first, from the dense and sparse (id, score) lists, each best first:
    w·z_dense + (1 − w)·z_sparse, with a missing id just below its list's lowest z. Ties keep dense-first order."""
    def z(pairs):
        if not pairs:
            return {}, 0.0
        s = np.array([p[1] for p in pairs], dtype=np.float64)
        s = (s - s.mean()) / (s.std() or 1.0)  # one hit, or all equal: every z is 0
        # A missing id sits just below the list's last one, so w = 0 or 1 returns that list's order.
        return dict(zip((p[0] for p in pairs), s.tolist())), float(s.min()) - 1e-6

    (zd, floor_d), (zs, floor_s) = z(dense), z(sparse)
    ids = list(dict.fromkeys([p[0] for p in dense] + [p[0] for p in sparse]))
    fused = [(i, dense_weight * zd.get(i, floor_d) + (1.0 - dense_weight) * zs.get(i, floor_s)) for i in ids]
    return sorted(fused, key=lambda kv: -kv[1])
