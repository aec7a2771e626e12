"""Retrieval: the query -> the shared embedder -> FAISS (dense), BM25 over the same chunk store
(sparse), or both fused (hybrid); and the relevance cut that answer() applies to the hits.

`Retriever` is the retrieval side of `UnifiedRAG` (a mixin: it reads the pipeline's embedder, index,
store and sparse index, and hybrid settings).
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any

import numpy as np

from .embedder import TextEncoder
from .errors import EmptyCorpusError, InputError
from .generator import KVPrefix
from .sparse import hybrid_fusion
from .types import RETRIEVAL_MODES, Hit, RetrievalMode, check_positive_int, check_texts

# Hybrid measured best on both retrieval suites it was run on, for the shipped `auto` on SmolLM2
# (benchmarks/results/cpu-2core/scifact-step400 and theoremqa-step400): SciFact nDCG@10 0.686 against
# 0.499 dense and 0.678 BM25, the TheoremQA stand-in 0.560 against 0.497 and 0.497.
DEFAULT_RETRIEVAL: RetrievalMode = "hybrid"
_UNSET: Any = object()


class Retriever:
    """retrieve(), and the retrieval steps answer() shares with it."""
    embedder: TextEncoder  # the shared backbone's Embedder, or a stand-in (benchmarks' baselines)

    def retrieve(self, query: str, k: int = 5, mode: RetrievalMode = DEFAULT_RETRIEVAL, *, ef_search: int | None = None,
                 nprobe: int | None = None) -> list[Hit]:
        """The k best chunks. mode "dense": the shared backbone's embeddings in FAISS; "sparse": BM25 over
        the same chunk store; "hybrid" (the default): a convex combination of both, z-normalised over each
        list cut at `hybrid_depth`, with `hybrid_dense_weight` on the dense side (unified_rag.sparse).
        A hit's score is the cosine (dense), the BM25 score (sparse) or the fused z-score (hybrid).
        `ef_search` (HNSW) and `nprobe` (IVF) override the index config for this search only."""
        return self._search(query, k, mode, ef_search=ef_search, nprobe=nprobe)[0]

    def _search(self, query: str, k: int, mode: str, *, with_kv: bool = False,
                **search_params) -> tuple[list[Hit], np.ndarray | None, KVPrefix | None]:
        """`retrieve()`, the query vector where the mode computed one, and with `with_kv` the KV of the
        query's pass where the embedder leaves a reusable one (`Embedder.reuses_kv`)."""
        if mode not in RETRIEVAL_MODES:
            raise InputError(f"mode must be one of {', '.join(RETRIEVAL_MODES)}, got {mode!r}")
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty" if isinstance(query, str) else
                             f"the query must be a string, got {type(query).__name__}")
        check_texts([query], "query")
        check_positive_int(k, "k")
        n = self.index.ntotal
        if n == 0:
            raise EmptyCorpusError("the index is empty: add documents first")
        if k > n:
            raise InputError(f"k={k} but the index holds only {n} chunks")
        qvec, prefix = None, None
        if mode != "sparse":
            qvec, prefix = self._encode_query(query, with_kv=with_kv)
        if mode == "dense":
            ranked = self._dense(qvec, k, **search_params)
        elif mode == "sparse":
            ranked = self._sparse(query, k)
        else:
            depth = min(max(k, self.hybrid_depth), n)
            fused = hybrid_fusion(self._dense(qvec, depth, **search_params), self._sparse(query, depth),
                                  self.hybrid_dense_weight)
            ranked = fused[:k]
        rows = {r["chunk_id"]: r for r in self.store.chunks([i for i, _ in ranked])}
        hits = []
        for i, s in ranked:
            if (r := rows.get(i)) is not None:
                hits.append(Hit(rank=len(hits) + 1, score=float(s), **r))
        return hits, qvec, prefix

    def _dense(self, qvec: np.ndarray, k: int, **search_params) -> list[tuple[int, float]]:
        scores, ids = self.index.search(qvec, k, **search_params)
        return [(int(i), float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]

    def _sparse(self, query: str, k: int) -> list[tuple[int, float]]:
        with self._sparse_lock:  # built once, lazily, even when several threads search at once
            if not self.sparse.built:
                self.sparse.build(*self.store.chunk_texts())
        ids, scores = self.sparse.search(query, k)
        return [(int(i), float(s)) for i, s in zip(ids, scores)]

    def _encode_query(self, query: str, with_kv: bool = False) -> tuple[np.ndarray, KVPrefix | None]:
        """The query vector, and with `with_kv` the KV of its pass where the embedder leaves a reusable
        one; a query longer than the embedder takes is cut, and the warning says so."""
        over = self.embedder.query_overflow(query)
        if over is not None:
            warnings.warn(f"the query is {over[0]} tokens long; only its first {over[1]} tokens were used "
                          "to search", stacklevel=4)
        if with_kv and self.embedder.reuses_kv and self.generator.weights is nullcontext:
            vec, prefix = self.embedder.encode_query_with_kv(query)
            return vec[None], prefix
        return self.embedder.encode_queries([query], show_progress_bar=False, warn_truncation=False), None

    def _source_vectors(self, hits: list[Hit]) -> np.ndarray:
        """The hits' unit vectors: read back from FAISS where it can, else embedded again."""
        v = self.index.vectors([h.chunk_id for h in hits]) if hits else None
        return self._encode([h.text for h in hits], "documents") if v is None else v

    def _encode(self, texts: list[str], side: str) -> np.ndarray:
        return getattr(self.embedder, f"encode_{side}")(texts, show_progress_bar=False, warn_truncation=False)

    def _relevant(self, query: str, k: int, retrieval: str,
                  min_relevance) -> tuple[list[Hit], np.ndarray, np.ndarray, KVPrefix | None]:
        """The retrieved hits that pass the relevance cut, renumbered, each with its cosine; their unit
        vectors; the query vector; and the KV of the query's pass where generation can reuse it."""
        cut = self.min_relevance if min_relevance is _UNSET else min_relevance
        if cut is not None and (not isinstance(cut, (int, float)) or isinstance(cut, bool) or not -1 <= cut <= 1):
            raise InputError(f"min_relevance must be a cosine in [-1, 1] or None, got {cut!r}")
        hits, qvec, prefix = self._search(query, k, retrieval, with_kv=True)
        qvec = (self._encode_query(query)[0] if qvec is None else qvec).reshape(-1)
        vectors = self._source_vectors(hits) if hits else np.empty((0, qvec.shape[0]), np.float32)
        scores = vectors @ qvec
        keep = [i for i, s in enumerate(scores) if cut is None or s >= cut]
        return ([hits[i].model_copy(update={"rank": r + 1, "relevance": float(scores[i])}) for r, i in enumerate(keep)],
                vectors[keep], qvec, prefix)

    def _embed_sentences(self, sentences: list[str]) -> np.ndarray:
        """Short sentences (an answer's, or a source's in extractive mode), embedded as queries are."""
        return self._encode(sentences, "queries")
