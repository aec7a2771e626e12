"""`UnifiedRAG`: text -> backbone -> embedder -> index -> retriever -> generator, on one set of weights."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

from .answer_adapter import AnswerAdapter, load_answer_adapter
from .backbone import Backbone
from .chunking import ChunkConfig, chunk_text
from .embedder import Embedder, load_embedder
from .errors import (EmptyCorpusError, InputError)
from .generator import GenerationConfig, Generator, cited_numbers
from .grounding import extract, ground
from .vectors import IndexConfig, open_index
from .persist import LOCK, MANIFEST, OWNED, Manifest, library_version  # noqa: F401
from .saveload import Persistent
from .readers import as_documents, as_list, texts_as_documents
from .retriever import _UNSET, DEFAULT_RETRIEVAL, Retriever  # noqa: F401
from .sparse import HYBRID_DENSE_WEIGHT, SparseIndex
from .store import DocStore
from .types import (ANSWER_MODES, RETRIEVAL_MODES, Answer, AnswerMode, Document, Hit, RetrievalMode,  # noqa: F401
                    check_positive_int, check_texts)

log = logging.getLogger(__name__)



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


class UnifiedRAG(Retriever, Persistent):
    """text -> backbone -> embedder -> index -> retriever -> generator, on one set of weights. Retrieval
    is `Retriever`'s (retriever.py), saving and loading `Persistent`'s (saveload.py)."""

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
    def add_texts(self, texts: Iterable[str], *, metadata: list[dict] | None = None, **kw) -> list[str]:
        """Index raw strings. Each gets a content hash as its id, so re-adding a text replaces it."""
        return self.add_documents(texts_as_documents(as_list(texts, "add_texts()"), metadata), **kw)

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
        docs = as_documents(docs)
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
        vecs = self.embedder.encode_documents(texts, batch_size=batch_size, show_progress_bar=False, on_batch=on_batch)
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
        doc_ids = as_list(doc_ids, "delete()")
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

    def _answer_modes(self, mode: str, retrieval: str) -> tuple[str, str]:
        if mode in RETRIEVAL_MODES:  # answer(q, mode="hybrid") meant the retrieval mode before answer modes existed
            mode, retrieval = "generative", mode
        if mode not in ANSWER_MODES:
            raise InputError(f"mode must be one of {', '.join(ANSWER_MODES)}, got {mode!r}")
        if retrieval not in RETRIEVAL_MODES:
            raise InputError(f"retrieval must be one of {', '.join(RETRIEVAL_MODES)}, got {retrieval!r}")
        return mode, retrieval

    # --- answers ----------------------------------------------------------------------------
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
        read = self.generator.read(query, hits, max_new_tokens, prefix)
        return self._grounded(read.cite(self.generator.generate_ids(read.ids, max_new_tokens, read.prefix)), read.used, vectors)

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
        read = self.generator.read(query, hits, max_new_tokens, prefix)
        return AnswerStream(read.cite_stream(self.generator.stream_ids(read.ids, max_new_tokens, read.prefix)), read.used,
                            finish=lambda text: self._grounded(text, read.used, vectors))

    # --- persistence ----------------------------------------------------------------------------
    def info(self) -> dict:
        n_docs, n_chunks = self.store.count()
        return dict(backbone=self.backbone.name, embedder=self.embedder.kind, dim=self.embedder.dim,
                    adapter_hash=self.embedder.fingerprint, documents=n_docs, chunks=n_chunks,
                    index=self.index_config.kind, device=str(self.backbone.device),
                    dtype=str(self.backbone.dtype).removeprefix("torch."),
                    generator_adapter=None if self.generator.adapter is None else self.generator.adapter.fingerprint)

    def __repr__(self) -> str:
        i = self.info()
        return f"UnifiedRAG({i['backbone']}, embedder={i['embedder']}, {i['documents']} docs, {i['chunks']} chunks)"
