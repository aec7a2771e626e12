"""`UnifiedRAG`: text -> backbone -> embedder -> index -> retriever -> generator, on one set of weights."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

from embedders import Embedder, load_embedder

from .answer_adapter import AnswerAdapter, load_answer_adapter
from .backbone import Backbone
from .chunking import ChunkConfig, chunk_text
from .errors import EmbedderMismatchError, EmptyCorpusError, IndexChangedError, IndexLoadError, InputError, ModelLoadError
from .generator import GenerationConfig, Generator, KVPrefix, cited_numbers
from .grounding import extract, ground
from .index import IndexConfig, load_index, open_index
from .io import check_save_target
from .persist import (LOCK, MANIFEST, OWNED, Manifest, current_generation, library_version, manifest_version,  # noqa: F401
                      read_manifest, verify, write_version, writer_lock)
from .readers import read_documents
from .sparse import HYBRID_DENSE_WEIGHT, SparseIndex, hybrid_fusion
from .store import DocStore
from .types import Answer, Document, Hit, check_positive_int, check_texts

log = logging.getLogger(__name__)

RetrievalMode = Literal["dense", "sparse", "hybrid"]
RETRIEVAL_MODES = ("dense", "sparse", "hybrid")
# Hybrid measured best on both retrieval suites it was run on, for the shipped `auto` on SmolLM2
# (benchmarks/results/cpu-2core/scifact-step400 and theoremqa-step400): SciFact nDCG@10 0.686 against
# 0.499 dense and 0.678 BM25, the TheoremQA stand-in 0.561 against 0.497 and 0.497.
DEFAULT_RETRIEVAL: RetrievalMode = "hybrid"
AnswerMode = Literal["generative", "extractive"]
ANSWER_MODES = ("generative", "extractive")
_UNSET: Any = object()
_LOAD_TRIES = 4


def _config(cls: type[BaseModel], value: Any, name: str) -> BaseModel:
    """A typed config from a config object or a dict; a bad field is an InputError naming it."""
    if isinstance(value, cls):
        return value
    try:
        return cls.model_validate(value or {})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"])) or "(root)"
        raise InputError(f"{name} config: {field}: {err['msg']} (got {err.get('input')!r})") from None


def _names_a_path(s: str) -> bool:
    """A one-line string that names an existing file or folder (a name too long to exist names none)."""
    if "\n" in s or len(s) > 4096:
        return False
    try:
        return os.path.exists(s)
    except (OSError, ValueError):
        return False


class AnswerStream:
    """Iterate for text pieces as they are generated; `sources` is known before the first piece.
    `answer`, read after the stream ends, is the grounded Answer (citations attributed as in `answer()`)."""

    def __init__(self, pieces: Iterator[str], sources: list[Hit], finish=None):
        self._pieces, self.sources, self.text, self._finish = pieces, sources, "", finish

    def __iter__(self) -> Iterator[str]:
        for p in self._pieces:
            self.text += p
            yield p

    @property
    def answer(self) -> Answer:
        if self._finish is not None:
            return self._finish(self.text)
        return Answer(text=self.text.strip(), sources=self.sources, cited=cited_numbers(self.text, len(self.sources)))


class UnifiedRAG:
    def __init__(self, backbone: Backbone, embedder: Embedder, *, index: IndexConfig | dict | None = None,
                 chunking: ChunkConfig | dict | None = None, generation: GenerationConfig | dict | None = None,
                 generator_adapter: AnswerAdapter | str | os.PathLike | None = None):
        if embedder.backbone is not backbone:
            raise InputError("the embedder must be built on this same Backbone: one copy of the weights")
        self.backbone, self.embedder = backbone, embedder
        self.index_config = _config(IndexConfig, index, "index")
        self.chunk_config = _config(ChunkConfig, chunking, "chunking")
        self.generator = Generator(backbone, _config(GenerationConfig, generation, "generation"),
                                   adapter=load_answer_adapter(generator_adapter, backbone))
        if generator_adapter is None and hasattr(embedder, "generation"):  # GEM: one adapter for both, when its config says so
            self.generator.weights = embedder.generation
        self.index = open_index(embedder.dim, self.index_config)
        self.store = DocStore()
        self.sparse, self._sparse_lock = SparseIndex(), threading.Lock()
        self.hybrid_depth = 100  # how deep each ranking goes into the fusion
        self.hybrid_dense_weight = HYBRID_DENSE_WEIGHT
        # answer() uses only sources whose cosine with the query reaches this (None: all of them). The
        # default is the embedder's calibrated cut (relevance.json beside a shipped adapter), or None.
        self.min_relevance: float | None = getattr(embedder, "relevance_cut", None)
        # What save() needs to merge instead of overwrite: every add and delete in order, and per index
        # dir the generation this object last read or wrote there with its position in that log.
        self._log: list[tuple[str, str]] = []
        self._bases: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | Backbone | None = None, *, embedder="auto",
                        generator_adapter="auto", device="auto", dtype="auto", trust_remote_code: bool = False,
                        **kw) -> UnifiedRAG:
        """`model`: None (offline SmolLM2 default), an HF id or dir, a .gguf, or a loaded Backbone.
        `embedder`: "auto", a kind ("mean", "last", "llm2vec-gen"), an adapter dir, or an Embedder.
        `generator_adapter`: the generator's answer adapter: "auto" (the one shipped for this backbone,
        if any), a dir, an AnswerAdapter, or None for the base model."""
        if isinstance(model, Backbone):
            backbone = model
        elif isinstance(embedder, Embedder) and model is None:
            backbone = embedder.backbone  # reuse the weights the embedder already holds
        else:
            backbone = Backbone.from_pretrained(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        emb = load_embedder(embedder, backbone)
        if str(generator_adapter) == "auto" and getattr(emb.config, "generate_with_adapter", False):
            generator_adapter = None  # GEM generating with its own adapter: one adapter for both
        return cls(backbone, emb, generator_adapter=generator_adapter, **kw)

    # --- indexing ---------------------------------------------------------------------------
    @staticmethod
    def _items(items: Any, what: str) -> list:
        """One item or an iterable of them, as a list; None and non-iterables are typed errors."""
        if items is None:
            raise InputError(f"{what} got None; pass a list")
        if isinstance(items, (str, bytes, os.PathLike, Document, dict)):
            return [items]
        try:
            return list(items)
        except TypeError:
            raise InputError(f"{what} needs a list, got {type(items).__name__}") from None

    def _as_documents(self, items: Iterable[Any]) -> list[Document]:
        docs, paths = [], []
        for it in self._items(items, "add_documents()"):
            if isinstance(it, Document):
                docs.append(it)
            elif isinstance(it, dict):
                try:
                    docs.append(Document.model_validate(it))
                except ValidationError as e:
                    raise InputError(f"bad document {str(it)[:80]!r}: {e.errors()[0]['msg']}") from None
            elif isinstance(it, os.PathLike) or (isinstance(it, str) and _names_a_path(it)):
                paths.append(it)
            elif isinstance(it, str):
                warnings.warn("add_documents() with plain strings that name no file is deprecated: "
                              "they are indexed as texts for now; use add_texts() for texts",
                              DeprecationWarning, stacklevel=3)
                docs.extend(self._texts_as_documents([it]))
            else:
                raise InputError(f"cannot index an object of type {type(it).__name__}; pass paths or "
                                 "Documents to add_documents(), strings to add_texts()")
        if paths:
            docs.extend(read_documents(paths))
        for d in docs:  # raw strings get a content hash as id, so re-adding the same text replaces it
            if d.id is None:
                d.id = hashlib.sha256(d.text.encode()).hexdigest()[:16]
        return docs

    @staticmethod
    def _texts_as_documents(texts: list, metadata: list[dict] | None = None) -> list[Document]:
        check_texts(texts, "add_texts() texts")
        metadata = metadata if metadata is not None else [{}] * len(texts)
        if len(metadata) != len(texts):
            raise InputError(f"add_texts() got {len(texts)} texts but {len(metadata)} metadata dicts")
        return [Document(text=t, metadata=m) for t, m in zip(texts, metadata)]

    def add_texts(self, texts: Iterable[str], *, metadata: list[dict] | None = None, **kw) -> list[str]:
        """Index raw strings. Each gets a content hash as its id, so re-adding a text replaces it."""
        return self.add_documents(self._texts_as_documents(self._items(texts, "add_texts()"), metadata), **kw)

    def add_documents(self, docs: Iterable[Document | dict | str | os.PathLike], *, batch_size: int = 32,
                      group_size: int = 1024, show_progress_bar: bool | None = None, skip_unchanged: bool = False,
                      on_commit: Callable[[], None] | None = None) -> list[str]:
        """Chunk, embed and index files, folders (paths as `str` or `Path`) and `Document`s. A doc whose
        id is already indexed is replaced. Raw strings go to `add_texts`. Returns the ids added.

        `skip_unchanged`: a doc already indexed under its id with the same source, metadata and chunks
        is left as it is, not embedded again, and not in the ids returned; so re-running a repeated or
        interrupted job embeds only what is new or changed. `on_commit()` runs each time a group of
        documents has landed in the store and the index together (the CLI saves there)."""
        check_positive_int(batch_size, "batch_size")
        docs = self._as_documents(docs)
        if not docs:
            raise EmptyCorpusError("no documents to index (empty input, or every file was skipped)")
        seen: dict[str, Document] = {d.id: d for d in docs}  # the last copy of a repeated id wins
        chunked = [(d, chunk_text(d.text, self.backbone.tokenizer, self.chunk_config)) for d in seen.values()]
        chunked = [(d, c) for d, c in chunked if c]
        if not chunked:
            raise EmptyCorpusError("the documents hold no indexable text")
        if skip_unchanged:
            chunked = [(d, c) for d, c in chunked if not self.store.unchanged(d.id, d.source, d.metadata, c)]
        texts = [t for _, cs in chunked for t, _, _ in cs]
        show = len(texts) >= 64 if show_progress_bar is None else show_progress_bar
        bar = tqdm(total=len(texts), desc="indexing", unit="chunk", disable=not show)
        # Commit in groups: each group lands in the store and the index together or not at all.
        group: list[tuple[Document, list]] = []
        for i, item in enumerate(chunked):
            group.append(item)
            if sum(len(c) for _, c in group) >= group_size or i == len(chunked) - 1:
                self._commit(group, batch_size, bar.update)  # the bar moves per encoded batch
                group = []
                if on_commit is not None:
                    on_commit()
        bar.close()
        return [d.id for d, _ in chunked] if skip_unchanged else list(seen)

    def _commit(self, group: list[tuple[Document, list]], batch_size: int, on_batch=None) -> None:
        texts = [t for _, cs in group for t, _, _ in cs]
        if isinstance(self.embedder, Embedder):
            vecs = self.embedder.encode_documents(texts, batch_size=batch_size, show_progress_bar=False,
                                                  on_batch=on_batch)
        else:  # an outside embedder (benchmarks' baselines): the bar moves once per group
            vecs = self.embedder.encode_documents(texts, batch_size=batch_size, show_progress_bar=False)
            if on_batch is not None:
                on_batch(len(texts))
        self._commit_vectors(group, vecs)

    def _commit_vectors(self, group: list[tuple[Document, list]], vecs: np.ndarray) -> None:
        """Store and index a group of chunked documents whose chunk vectors (in order) are already
        computed: here by `_commit`, or by Ray workers (unified_rag.ray_engine)."""
        replaced = [d.id for d, _ in group if self.store.has(d.id)]
        old_ids = self.store.chunk_ids(replaced)
        with self.store.transaction():
            self.store.delete(replaced)
            ids = [cid for d, cs in group for cid in self.store.add(d.id, d.source, d.metadata, cs)]
            self.index.add(np.asarray(ids, dtype=np.int64), vecs)  # a failure here rolls the store back
        self.index.remove(old_ids)
        self.sparse.invalidate()
        self._log += [(d.id, "add") for d, _ in group]

    def add_paths(self, *paths: str | os.PathLike, **kw) -> list[str]:
        return self.add_documents([Path(p) for p in paths], **kw)

    def delete(self, doc_ids: str | list[str]) -> int:
        """Remove documents and their chunks; returns how many chunks went."""
        doc_ids = self._items(doc_ids, "delete()")
        if not all(isinstance(d, str) for d in doc_ids):
            raise InputError("delete() takes document ids as strings")
        missing = [d for d in doc_ids if not self.store.has(d)]
        if missing:
            raise InputError(f"unknown document ids: {missing[:10]}")
        ids = self.store.chunk_ids(doc_ids)
        with self.store.transaction():
            self.store.delete(doc_ids)
        self.index.remove(ids)
        self.sparse.invalidate()
        self._log += [(d, "delete") for d in doc_ids]
        return len(ids)

    def __len__(self) -> int:
        return self.store.count()[0]

    # --- retrieval and generation -------------------------------------------------------------
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
        if not isinstance(self.embedder, Embedder):  # an outside embedder (benchmarks' baselines)
            return self.embedder.encode_queries([query], show_progress_bar=False), None
        budget = self.embedder.query_budget()
        n_tokens = len(self.backbone.tokenizer(query, add_special_tokens=False)["input_ids"])
        if n_tokens > budget:
            warnings.warn(f"the query is {n_tokens} tokens long; only its first {budget} tokens were used "
                          "to search", stacklevel=4)
        if with_kv and self.embedder.reuses_kv and self.generator.weights is nullcontext:
            vec, prefix = self.embedder.encode_query_with_kv(query)
            return vec[None], prefix
        return self.embedder.encode_queries([query], show_progress_bar=False, warn_truncation=False), None

    def _answer_modes(self, mode: str, retrieval: str) -> tuple[str, str]:
        if mode in RETRIEVAL_MODES:  # answer(q, mode="hybrid") meant the retrieval mode before answer modes existed
            mode, retrieval = "generative", mode
        if mode not in ANSWER_MODES:
            raise InputError(f"mode must be one of {', '.join(ANSWER_MODES)}, got {mode!r}")
        if retrieval not in RETRIEVAL_MODES:
            raise InputError(f"retrieval must be one of {', '.join(RETRIEVAL_MODES)}, got {retrieval!r}")
        return mode, retrieval

    def _source_vectors(self, hits: list[Hit]) -> np.ndarray:
        """The hits' unit vectors: read back from FAISS where it can, else embedded again."""
        v = self.index.vectors([h.chunk_id for h in hits]) if hits else None
        return self._encode([h.text for h in hits], "documents") if v is None else v

    def _encode(self, texts: list[str], side: str) -> np.ndarray:
        quiet = dict(warn_truncation=False) if isinstance(self.embedder, Embedder) else {}  # outside ones lack it
        return getattr(self.embedder, f"encode_{side}")(texts, show_progress_bar=False, **quiet)

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

    def _cannot_answer(self, mode: str) -> Answer:
        return Answer(text=self.generator.config.no_answer_text, sources=[], answerable=False, mode=mode)

    def _grounded(self, text: str, used: list[Hit], vectors: np.ndarray) -> Answer:
        """`vectors` are the relevant hits' in rank order; `used`, what the prompt fit, is a prefix of them.
        The answer adapter writes its own markers and declines by itself: its citations are only its own."""
        if self.generator.declined(text):
            return Answer(text=text, sources=used, answerable=False)
        tuned = self.generator.adapter is not None and self.generator.weights == self.generator.adapter.active
        text, citations = ground(text, len(used), vectors[:len(used)], self._embed_sentences, attribute=not tuned)
        return Answer(text=text, sources=used, cited=cited_numbers(text, len(used)), citations=citations)

    def answer(self, query: str, k: int = 5, max_new_tokens: int = 256, mode: AnswerMode = "generative", *,
               retrieval: RetrievalMode = DEFAULT_RETRIEVAL, min_relevance: float | None = _UNSET,
               max_sentences: int = 3) -> Answer:
        """Answer from the k best chunks that pass the relevance cut (`min_relevance`, default
        `self.min_relevance`); with none passing, a clear "cannot answer" (`Answer.answerable` False).

        mode "generative": the generator writes the answer citing [n]; a sentence it leaves without a
        valid citation gets its nearest source by embedding (`Answer.citations` says which is which).
        mode "extractive": the `max_sentences` source sentences nearest the question, each cited.
        `retrieval`: "dense", "sparse" or "hybrid", as in `retrieve()`."""
        mode, retrieval = self._answer_modes(mode, retrieval)
        check_positive_int(max_new_tokens, "max_new_tokens")
        check_positive_int(max_sentences, "max_sentences")
        hits, vectors, qvec, prefix = self._relevant(query, k, retrieval, min_relevance)
        if not hits:
            return self._cannot_answer(mode)
        if mode == "extractive":
            text, citations = extract(qvec, [h.text for h in hits], self._embed_sentences, max_sentences)
            return Answer(text=text, sources=hits, cited=cited_numbers(text, len(hits)), citations=citations,
                          mode="extractive")
        ids, used = self.generator.rag_prompt(query, hits, max_new_tokens, prefix)
        return self._grounded(self.generator.generate_ids(ids, max_new_tokens, prefix), used, vectors)

    def stream_answer(self, query: str, k: int = 5, max_new_tokens: int = 256, mode: AnswerMode = "generative", *,
                      retrieval: RetrievalMode = DEFAULT_RETRIEVAL, min_relevance: float | None = _UNSET,
                      max_sentences: int = 3) -> AnswerStream:
        """`answer()` as it is generated. The pieces are the generator's own text; the stream's `answer`,
        read once it ends, adds the attributed citations. "cannot answer" and extractive answers come whole."""
        mode, retrieval = self._answer_modes(mode, retrieval)
        check_positive_int(max_new_tokens, "max_new_tokens")
        if mode == "extractive":
            done = self.answer(query, k, max_new_tokens, mode, retrieval=retrieval, min_relevance=min_relevance,
                               max_sentences=max_sentences)
            return AnswerStream(iter([done.text]), done.sources, finish=lambda _text: done)
        hits, vectors, _, prefix = self._relevant(query, k, retrieval, min_relevance)
        if not hits:
            no = self._cannot_answer("generative")
            return AnswerStream(iter([no.text]), [], finish=lambda _text: no)
        ids, used = self.generator.rag_prompt(query, hits, max_new_tokens, prefix)
        return AnswerStream(self.generator.stream_ids(ids, max_new_tokens, prefix), used,
                            finish=lambda text: self._grounded(text, used, vectors))

    # --- persistence ----------------------------------------------------------------------------
    def info(self) -> dict:
        n_docs, n_chunks = self.store.count()
        return dict(backbone=self.backbone.name, embedder=self.embedder.kind, dim=self.embedder.dim,
                    adapter_hash=self.embedder.fingerprint, documents=n_docs, chunks=n_chunks,
                    index=self.index_config.kind, device=str(self.backbone.device),
                    dtype=str(self.backbone.dtype).removeprefix("torch."),
                    generator_adapter=None if self.generator.adapter is None else self.generator.adapter.fingerprint)

    def save(self, path: str | os.PathLike, *, lock_timeout: float | None = 60.0, overwrite: bool = False) -> Path:
        """Write a new version folder beside the old one, then swap the manifest atomically: a save
        killed at any point leaves the old or the new index loadable. Writers hold an inter-process
        lock on the folder: a second one waits up to `lock_timeout` seconds (None: for ever), then
        raises IndexLockedError. Readers (load) never wait. Cleanup removes only what save() made.

        No lost updates: where another writer saved into `path` since this object last read or wrote
        it (or `path` holds an index this object never read), this object's adds and deletes since then
        are replayed onto that newer version, and the result is saved and becomes this object's state.
        `overwrite=True` replaces the index in `path` with exactly this object's. IndexChangedError
        where the changes cannot be merged (the index there was built by another embedder)."""
        path = check_save_target(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create the index folder {path}: {e.strerror or e}") from None
        key = str(path.resolve())
        with writer_lock(path, lock_timeout):
            current = current_generation(path)
            base = self._bases.get(key)
            if current is not None and not overwrite and (base is None or base[0] != current):
                self._merge_onto(path, self._changes_since(base))
            manifest = write_version(self, path, (current or 0) + 1)
            self._bases[key] = (manifest.generation, len(self._log))
        return path

    def _changes_since(self, base: tuple[int, int] | None) -> dict[str, str]:
        """doc id -> "add" or "delete": this object's last change to each doc since `base` (its log
        position at a load or save of that dir); for a dir it never read, every doc it holds."""
        if base is None:
            return {d: "add" for d in self.store.doc_ids()}
        return dict(self._log[base[1]:])  # the last change to a doc wins

    def _merge_onto(self, path: Path, changes: dict[str, str]) -> None:
        """Replay `changes` onto the version of `path` on disk (hold the lock), and take its state as ours.
        Added docs keep their chunks and vectors: nothing is embedded again where the index gives them back."""
        m = read_manifest(path)
        try:
            newer = UnifiedRAG._load_version(path, m, manifest_version(path, m), self.backbone, self.embedder,
                                             self.generator.config, None)
        except EmbedderMismatchError as e:
            raise IndexChangedError(f"{path} holds a version this index did not come from, built with another "
                                    f"embedder or backbone, so this index's changes cannot be merged onto it ({e}). "
                                    f"Load {path} and re-apply the changes, or save(..., overwrite=True) to "
                                    "replace it") from None
        gone = [d for d, op in changes.items() if op == "delete" and newer.store.has(d)]
        if gone:
            newer.delete(gone)
        added = [d for d, op in changes.items() if op == "add" and self.store.has(d)]
        for i in range(0, len(added), 256):
            group, ids = [], []
            for doc_id in added[i:i + 256]:
                source, metadata, chunks, chunk_ids = self.store.document(doc_id)
                group.append((Document(id=doc_id, text=chunks[0][0], source=source, metadata=metadata), chunks))
                ids += chunk_ids
            vecs = self.index.vectors(ids)
            if vecs is None:  # an index that keeps no vectors (IVF): embed those chunks again
                vecs = self._encode([self.store.chunks([c])[0]["text"] for c in ids], "documents")
            newer._commit_vectors(group, vecs)
        self.index, self.store, self.index_config = newer.index, newer.store, newer.index_config
        self.sparse.invalidate()

    @staticmethod
    def read_manifest(path: str | os.PathLike) -> Manifest:
        return read_manifest(path)

    @staticmethod
    def verify(path: str | os.PathLike, m: Manifest | None = None, *, checksums: bool = True) -> Manifest:
        """Check every file the manifest names: present, of its recorded size, and (`checksums`) of
        its SHA-256. Raises IndexLoadError naming the first file that fails."""
        return verify(path, m, checksums=checksums)

    @classmethod
    def load(cls, path: str | os.PathLike, *, model: Backbone | str | None = None, embedder=None,
             device="auto", dtype="auto", generation: GenerationConfig | dict | None = None,
             generator_adapter="auto", verify: bool = False) -> UnifiedRAG:
        """Load a saved index. By default the backbone and embedder recorded in it are rebuilt; pass
        your own to share weights already in memory, and a mismatch is refused, naming both sides.
        Every file is checked for presence and size; `verify=True` also checks every SHA-256 (at
        1M vectors the flat index alone is 2.2 GB) and the document store's pages, as `unified-rag
        verify DIR` does.
        Takes no lock: if a concurrent save() replaces the version being read, the new one is read."""
        path = Path(path)
        m = cls.read_manifest(path)
        backbone = None
        for attempt in range(_LOAD_TRIES):
            try:
                version = manifest_version(path, m)
                cls.verify(path, m, checksums=verify)
                if backbone is None:
                    if isinstance(embedder, Embedder):
                        backbone = embedder.backbone
                    elif isinstance(model, Backbone):
                        backbone = model
                    else:
                        backbone = Backbone.from_pretrained(model or m.backbone, device=device, dtype=dtype)
                return cls._load_version(path, m, version, backbone, embedder, generation, generator_adapter)
            except EmbedderMismatchError:
                raise
            except (IndexLoadError, ModelLoadError):
                try:  # a writer swapped the manifest and removed the version we were reading?
                    newer = cls.read_manifest(path)
                except IndexLoadError:
                    newer = m
                if newer == m or attempt == _LOAD_TRIES - 1:
                    raise
                m = newer
        raise AssertionError("unreachable")

    @classmethod
    def _load_version(cls, path: Path, m: Manifest, version: str, backbone: Backbone, embedder,
                      generation: GenerationConfig | dict | None, generator_adapter="auto") -> UnifiedRAG:
        if backbone.fingerprint != m.backbone_fingerprint:
            raise EmbedderMismatchError(
                f"{path} was built with backbone {m.backbone} ({m.backbone_fingerprint}); "
                f"the one offered is {backbone.name} ({backbone.fingerprint})")
        dtype_now = str(backbone.dtype).removeprefix("torch.")
        if m.backbone_dtype and m.backbone_dtype != dtype_now:  # same weights, slightly different vectors
            warnings.warn(f"{path} was embedded in {m.backbone_dtype}, the backbone now runs in {dtype_now}; "
                          "scores shift slightly. Re-index, or load with dtype=" + repr(m.backbone_dtype), stacklevel=3)
        emb = load_embedder(embedder if embedder is not None else path / version / "embedder", backbone)
        if emb.fingerprint != m.adapter_hash or emb.dim != m.embedder_dim:
            raise EmbedderMismatchError(
                f"{path} was built with embedder {m.embedder_kind} (dim {m.embedder_dim}, adapter {m.adapter_hash}); "
                f"the one offered is {emb.kind} (dim {emb.dim}, adapter {emb.fingerprint})")
        if str(generator_adapter) == "auto" and getattr(emb.config, "generate_with_adapter", False):
            generator_adapter = None
        rag = cls(backbone, emb, index=m.index, chunking=m.chunking, generation=generation,
                  generator_adapter=generator_adapter)
        rag._bases[str(path.resolve())] = (m.generation, 0)
        rag.index = load_index(path / version, m.embedder_dim, m.index)
        rag.store = DocStore.load_from(path / version / "store.sqlite")
        n_docs, n_chunks = rag.store.count()
        if (n_docs, n_chunks) != (m.n_documents, m.n_chunks) or rag.index.ntotal != n_chunks:
            raise IndexLoadError(f"{path} is inconsistent: manifest {m.n_documents} docs/{m.n_chunks} chunks, "
                                 f"store {n_docs}/{n_chunks}, index {rag.index.ntotal} vectors")
        faiss_ids, store_ids = np.sort(rag.index.ids()), np.asarray(rag.store.all_chunk_ids(), dtype=np.int64)
        if not np.array_equal(faiss_ids, store_ids):
            lost, stray = np.setdiff1d(store_ids, faiss_ids), np.setdiff1d(faiss_ids, store_ids)
            raise IndexLoadError(f"{path} is inconsistent: {len(lost)} chunks of the store have no vector "
                                 f"(e.g. {lost[:3].tolist()}), {len(stray)} vectors have no chunk "
                                 f"(e.g. {stray[:3].tolist()}); rebuild the index")
        return rag

    def __repr__(self) -> str:
        i = self.info()
        return f"UnifiedRAG({i['backbone']}, embedder={i['embedder']}, {i['documents']} docs, {i['chunks']} chunks)"
