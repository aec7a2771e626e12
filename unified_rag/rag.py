"""`UnifiedRAG`: text -> backbone -> embedder -> index -> retriever -> generator, on one set of weights."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import uuid
import warnings
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np
from filelock import FileLock, Timeout
from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

from embedders import Embedder, load_embedder

from .answer_adapter import AnswerAdapter, load_answer_adapter
from .backbone import Backbone
from .chunking import ChunkConfig, chunk_text
from .errors import (EmbedderMismatchError, EmptyCorpusError, IndexLoadError, IndexLockedError, InputError,
                     ModelLoadError)
from .generator import GenerationConfig, Generator, KVPrefix, cited_numbers
from .grounding import extract, ground
from .index import IndexConfig, index_file, load_index, open_index, save_index
from .io import _fsync_dir, atomic_write_json, check_save_target, sha256_file
from .readers import read_documents
from .sparse import HYBRID_DENSE_WEIGHT, SparseIndex, hybrid_fusion
from .store import DocStore
from .types import Answer, Document, Hit, check_positive_int, check_texts

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RetrievalMode = Literal["dense", "sparse", "hybrid"]
RETRIEVAL_MODES = ("dense", "sparse", "hybrid")
# Hybrid measured best on both retrieval suites it was run on, for the shipped `auto` on SmolLM2
# (benchmarks/results/cpu-2core/scifact-step400 and theoremqa-step400): SciFact nDCG@10 0.686 against
# 0.499 dense and 0.678 BM25, the TheoremQA stand-in 0.561 against 0.497 and 0.497.
DEFAULT_RETRIEVAL: RetrievalMode = "hybrid"
AnswerMode = Literal["generative", "extractive"]
ANSWER_MODES = ("generative", "extractive")
_UNSET: Any = object()
FORMAT_VERSION = 1
LOCK = ".unified-rag.lock"  # writers (save) hold it; readers (load) never touch it
OWNED = ".unified-rag-owned"  # written first into every folder save() makes; cleanup deletes only those
_OWNED_TEXT = "unified-rag: made by save(); removed once manifest.json no longer names this folder\n"
_VERSION_RE = re.compile(r"v-\d{8}T\d{6}-[0-9a-f]{6}(?:[0-9a-f]{6})?")  # 6 hex: names of unified-rag <= 0.2
_TMP_RE = re.compile(r"\.tmp-urag-[0-9a-f]{32}")
_MANIFEST_TMP_RE = re.compile(re.escape(MANIFEST) + r"\.[a-z0-9_]{8}\.tmp")  # atomic_write_bytes' mkstemp
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_LOAD_TRIES = 4


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unified-rag")
    except PackageNotFoundError:
        return "0+unknown"


class Manifest(BaseModel):
    """The commit point of a saved index: written last, atomically, naming every file and its hash."""

    format_version: int
    library_version: str
    backbone: str
    backbone_fingerprint: str
    backbone_dtype: str | None = None
    embedder_kind: str
    embedder_dim: int
    adapter_hash: str
    index: IndexConfig
    chunking: ChunkConfig
    n_documents: int
    n_chunks: int
    files: dict[str, str]  # relative path -> sha256
    sizes: dict[str, int] = {}  # relative path -> bytes (absent in indexes saved before 0.2.1)
    created_at: str


def manifest_version(path: Path, m: Manifest) -> str:
    """The one version folder that holds every file the manifest names. Refuses an empty map, bad
    checksums, and any path that is absolute, climbs out (`..`) or resolves outside that folder."""
    where = path / MANIFEST
    if not m.files:
        raise IndexLoadError(f"{where} is corrupt: its files map is empty")
    versions = set()
    for rel, digest in m.files.items():
        parts = PurePosixPath(rel).parts
        if (not rel.strip() or "\\" in rel or PurePosixPath(rel).as_posix() != rel or PurePosixPath(rel).is_absolute()
                or PureWindowsPath(rel).drive or len(parts) < 2 or any(x in ("", ".", "..") for x in parts)):
            raise IndexLoadError(f"{where} is corrupt or unsafe: the file path {rel!r} is not inside a version "
                                 "folder of the index")
        if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
            raise IndexLoadError(f"{where} is corrupt: the checksum of {rel!r} is not a sha256 hex digest")
        versions.add(parts[0])
    if len(versions) != 1:
        raise IndexLoadError(f"{where} is corrupt: its files span {len(versions)} folders "
                             f"({', '.join(sorted(versions)[:3])}); an index has one version folder")
    version = versions.pop()
    for needed in (index_file(m.index), "store.sqlite"):
        if f"{version}/{needed}" not in m.files:
            raise IndexLoadError(f"{where} is corrupt: it does not list {version}/{needed}")
    root, vdir = path.resolve(), (path / version).resolve()
    if vdir.parent != root:
        raise IndexLoadError(f"{where} is unsafe: {version} resolves to {vdir}, outside the index folder {root}")
    for rel in m.files:
        if not (path / rel).resolve().is_relative_to(vdir):
            raise IndexLoadError(f"{where} is unsafe: {rel} resolves to {(path / rel).resolve()}, outside {vdir}")
    return version


def _named_version(path: Path) -> str | None:
    """The version folder the manifest on disk names, read leniently (a newer format too); None if none."""
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        tops = {PurePosixPath(k).parts[0] for k in files}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return tops.pop() if len(tops) == 1 else None


def _owned(d: Path) -> bool:
    """A folder save() made: a name only save() gives, and the marker inside (or nothing at all inside:
    a save killed between mkdir and the marker)."""
    if not (_VERSION_RE.fullmatch(d.name) or _TMP_RE.fullmatch(d.name)) or d.is_symlink() or not d.is_dir():
        return False
    try:
        return (d / OWNED).is_file() or not any(d.iterdir())
    except OSError:
        return False


def _remove_owned(d: Path) -> None:
    """Delete a folder save() made, its marker last: a removal killed midway leaves it marked for the next."""
    if not d.is_dir():
        return
    try:
        for child in d.iterdir():
            if child.name == OWNED:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        (d / OWNED).unlink(missing_ok=True)
        d.rmdir()
    except OSError as e:
        log.warning("could not remove the old index folder %s: %s", d, e)


def _collect_garbage(path: Path, keep: set[str], previous: str | None) -> None:
    """Remove what earlier saves left: folders save() made that the manifest does not name, the folder
    the replaced manifest named (if save() named it: also one of an older unified-rag, unmarked), and
    manifest temp files of killed saves. Only while holding the lock."""
    if previous and previous not in keep and _VERSION_RE.fullmatch(previous):
        d = path / previous
        if d.is_dir() and not d.is_symlink() and not (d / OWNED).exists():
            try:
                (d / OWNED).write_text(_OWNED_TEXT)  # adopt it, so that a removal killed midway is finished later
            except OSError:
                pass
    for p in path.iterdir():
        if p.name in keep:
            continue
        if _MANIFEST_TMP_RE.fullmatch(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
        elif _owned(p):
            _remove_owned(p)


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

    def save(self, path: str | os.PathLike, *, lock_timeout: float | None = 60.0) -> Path:
        """Write a new version folder beside the old one, then swap the manifest atomically: a save
        killed at any point leaves the old or the new index loadable. Writers hold an inter-process
        lock on the folder: a second one waits up to `lock_timeout` seconds (None: for ever), then
        raises IndexLockedError. Readers (load) never wait. Cleanup removes only what save() made."""
        path = check_save_target(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create the index folder {path}: {e.strerror or e}") from None
        lock = FileLock(str(path / LOCK), timeout=-1 if lock_timeout is None else max(float(lock_timeout), 0.0))
        try:
            lock.acquire()
        except Timeout:
            raise IndexLockedError(
                f"{path} is being saved by another process (it holds {path / LOCK}); gave up after {lock_timeout} s. "
                "Wait for that save to finish, or pass a larger lock_timeout") from None
        try:
            self._save_locked(path)
        finally:
            lock.release()
        return path

    def _save_locked(self, path: Path) -> None:
        previous = _named_version(path)
        version = f"v-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        tmp = path / f".tmp-urag-{uuid.uuid4().hex}"
        tmp.mkdir(mode=0o777)  # the umask applies, as to any folder (mkdtemp would give 0700)
        try:
            (tmp / OWNED).write_text(_OWNED_TEXT)  # first, so that cleanup knows the folder is ours
            save_index(self.index, tmp)
            self.store.save_to(tmp / "store.sqlite")
            self.embedder.save_pretrained(tmp / "embedder")
            files, sizes = {}, {}
            for p in sorted(tmp.rglob("*")):
                if p.is_file() and p != tmp / OWNED:
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
                    rel = f"{version}/{p.relative_to(tmp).as_posix()}"
                    files[rel], sizes[rel] = sha256_file(p), p.stat().st_size
            for d in [*(p for p in tmp.rglob("*") if p.is_dir()), tmp]:
                _fsync_dir(d)
            os.replace(tmp, path / version)
            _fsync_dir(path)
        except BaseException:
            _remove_owned(tmp)
            raise
        n_docs, n_chunks = self.store.count()
        manifest = Manifest(format_version=FORMAT_VERSION, library_version=library_version(),
                            backbone=self.backbone.name, backbone_fingerprint=self.backbone.fingerprint,
                            backbone_dtype=str(self.backbone.dtype).removeprefix("torch."),
                            embedder_kind=self.embedder.kind, embedder_dim=self.embedder.dim,
                            adapter_hash=self.embedder.fingerprint, index=self.index_config,
                            chunking=self.chunk_config, n_documents=n_docs, n_chunks=n_chunks, files=files,
                            sizes=sizes, created_at=datetime.now(timezone.utc).isoformat())
        atomic_write_json(path / MANIFEST, manifest.model_dump(mode="json"))
        # Only now is the old version garbage; never delete what the manifest on disk names.
        _collect_garbage(path, {version, _named_version(path) or version}, previous)

    @staticmethod
    def read_manifest(path: str | os.PathLike) -> Manifest:
        path = Path(path)
        if not path.exists():
            raise IndexLoadError(f"index dir not found: {path}")
        if not (path / MANIFEST).is_file():
            raise IndexLoadError(f"{path} is not a unified-rag index: {MANIFEST} is missing")
        try:
            m = Manifest.model_validate_json((path / MANIFEST).read_text())
        except (ValidationError, ValueError, UnicodeDecodeError) as e:
            raise IndexLoadError(f"{path / MANIFEST} is corrupt: {str(e).splitlines()[0]}") from None
        if m.format_version > FORMAT_VERSION:
            raise IndexLoadError(f"{path} was written by a newer unified-rag ({m.library_version}); upgrade")
        manifest_version(path, m)
        return m

    @staticmethod
    def verify(path: str | os.PathLike, m: Manifest | None = None, *, checksums: bool = True) -> Manifest:
        """Check every file the manifest names: present, of its recorded size, and (`checksums`) of
        its SHA-256. Raises IndexLoadError naming the first file that fails."""
        path = Path(path)
        m = m or UnifiedRAG.read_manifest(path)
        for rel, digest in m.files.items():
            f = path / rel
            try:
                size = f.stat().st_size if f.is_file() else None
                if size is None:
                    raise IndexLoadError(f"{path} is incomplete: {rel} is missing")
                if rel in m.sizes and size != m.sizes[rel]:
                    raise IndexLoadError(f"{path} is corrupt or truncated: {rel} has {size} bytes, the manifest "
                                         f"records {m.sizes[rel]}")
                if (checksums or rel not in m.sizes) and sha256_file(f) != digest:
                    raise IndexLoadError(f"{path} is corrupt or truncated: {rel} does not match its checksum")
            except OSError as e:
                raise IndexLoadError(f"{path}: cannot read {rel}: {e.strerror or e}") from None
        return m

    @classmethod
    def load(cls, path: str | os.PathLike, *, model: Backbone | str | None = None, embedder=None,
             device="auto", dtype="auto", generation: GenerationConfig | dict | None = None,
             generator_adapter="auto", verify: bool = False) -> UnifiedRAG:
        """Load a saved index. By default the backbone and embedder recorded in it are rebuilt; pass
        your own to share weights already in memory, and a mismatch is refused, naming both sides.
        Every file is checked for presence and size; `verify=True` also checks every SHA-256 (at
        1M vectors the flat index alone is 2.2 GB), as `unified-rag verify DIR` does.
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
