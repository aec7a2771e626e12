"""`UnifiedRAG`: text -> backbone -> embedder -> index -> retriever -> generator, on one set of weights."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from pydantic import BaseModel, ValidationError
from tqdm.auto import tqdm

from embedders import Embedder, load_embedder

from .backbone import Backbone
from .chunking import ChunkConfig, chunk_text
from .errors import EmbedderMismatchError, EmptyCorpusError, IndexLoadError, InputError
from .generator import GenerationConfig, Generator, cited_numbers
from .index import IndexConfig, VectorIndex
from .io import atomic_write_json, sha256_file
from .readers import read_documents
from .store import DocStore
from .types import Answer, Document, Hit

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


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
    created_at: str


class AnswerStream:
    """Iterate for text pieces as they are generated; `sources` is known before the first piece."""

    def __init__(self, pieces: Iterator[str], sources: list[Hit]):
        self._pieces, self.sources, self.text = pieces, sources, ""

    def __iter__(self) -> Iterator[str]:
        for p in self._pieces:
            self.text += p
            yield p

    @property
    def answer(self) -> Answer:
        return Answer(text=self.text.strip(), sources=self.sources, cited=cited_numbers(self.text, len(self.sources)))


class UnifiedRAG:
    def __init__(self, backbone: Backbone, embedder: Embedder, *, index: IndexConfig | dict | None = None,
                 chunking: ChunkConfig | dict | None = None, generation: GenerationConfig | dict | None = None):
        if embedder.backbone is not backbone:
            raise InputError("the embedder must be built on this same Backbone: one copy of the weights")
        self.backbone, self.embedder = backbone, embedder
        self.index_config = IndexConfig.model_validate(index or {})
        self.chunk_config = ChunkConfig.model_validate(chunking or {})
        self.generator = Generator(backbone, GenerationConfig.model_validate(generation or {}))
        self.index = VectorIndex(embedder.dim, self.index_config)
        self.store = DocStore()

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | Backbone | None = None, *, embedder="auto",
                        device="auto", dtype="auto", trust_remote_code: bool = False, **kw) -> UnifiedRAG:
        """`model`: None (offline SmolLM2 default), an HF id or dir, a .gguf, or a loaded Backbone.
        `embedder`: "auto", a kind ("mean", "last", "llm2vec-gen"), an adapter dir, or an Embedder."""
        if isinstance(model, Backbone):
            backbone = model
        elif isinstance(embedder, Embedder) and model is None:
            backbone = embedder.backbone  # reuse the weights the embedder already holds
        else:
            backbone = Backbone.from_pretrained(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        return cls(backbone, load_embedder(embedder, backbone), **kw)

    # --- indexing ---------------------------------------------------------------------------
    def _as_documents(self, items: Iterable[Any]) -> list[Document]:
        if isinstance(items, (str, os.PathLike, Document, dict)):
            items = [items]
        docs, paths = [], []
        for it in items:
            if isinstance(it, Document):
                docs.append(it)
            elif isinstance(it, dict):
                try:
                    docs.append(Document.model_validate(it))
                except ValidationError as e:
                    raise InputError(f"bad document {str(it)[:80]!r}: {e.errors()[0]['msg']}") from None
            elif isinstance(it, os.PathLike):
                paths.append(it)
            elif isinstance(it, str):
                if not it.strip():
                    raise InputError("empty or whitespace-only document text")
                if "\n" not in it and len(it) < 4096 and os.path.exists(it):
                    warnings.warn(f"{it!r} is indexed as text; pass Path({it!r}) or use add_paths() "
                                  "to read the file", stacklevel=3)
                docs.append(Document(text=it))
            else:
                raise InputError(f"cannot index an object of type {type(it).__name__}")
        if paths:
            docs.extend(read_documents(paths))
        for d in docs:  # raw strings get a content hash as id, so re-adding the same text replaces it
            if d.id is None:
                d.id = hashlib.sha256(d.text.encode()).hexdigest()[:16]
        return docs

    def add_documents(self, docs: Iterable[Document | str | dict | os.PathLike], *, batch_size: int = 32,
                      group_size: int = 1024, show_progress_bar: bool | None = None) -> list[str]:
        """Chunk, embed and index. A doc whose id is already indexed is replaced. Strings are texts;
        use `pathlib.Path` (or `add_paths`) for files and folders. Returns the document ids added."""
        docs = self._as_documents(docs)
        if not docs:
            raise EmptyCorpusError("no documents to index (empty input, or every file was skipped)")
        seen: dict[str, Document] = {d.id: d for d in docs}  # the last copy of a repeated id wins
        chunked = [(d, chunk_text(d.text, self.backbone.tokenizer, self.chunk_config)) for d in seen.values()]
        chunked = [(d, c) for d, c in chunked if c]
        texts = [t for _, cs in chunked for t, _, _ in cs]
        if not texts:
            raise EmptyCorpusError("the documents hold no indexable text")
        show = len(texts) >= 64 if show_progress_bar is None else show_progress_bar
        bar = tqdm(total=len(texts), desc="indexing", unit="chunk", disable=not show)
        # Commit in groups: each group lands in the store and the index together or not at all.
        group: list[tuple[Document, list]] = []
        for i, item in enumerate(chunked):
            group.append(item)
            if sum(len(c) for _, c in group) >= group_size or i == len(chunked) - 1:
                self._commit(group, batch_size)
                bar.update(sum(len(c) for _, c in group))
                group = []
        bar.close()
        return list(seen)

    def _commit(self, group: list[tuple[Document, list]], batch_size: int) -> None:
        vecs = self.embedder.encode_documents([t for _, cs in group for t, _, _ in cs], batch_size=batch_size,
                                              show_progress_bar=False)
        replaced = [d.id for d, _ in group if self.store.has(d.id)]
        old_ids = self.store.chunk_ids(replaced)
        with self.store.transaction():
            self.store.delete(replaced)
            ids = [cid for d, cs in group for cid in self.store.add(d.id, d.source, d.metadata, cs)]
            self.index.add(np.asarray(ids, dtype=np.int64), vecs)  # a failure here rolls the store back
        self.index.remove(old_ids)

    def add_paths(self, *paths: str | os.PathLike, **kw) -> list[str]:
        return self.add_documents([Path(p) for p in paths], **kw)

    def delete(self, doc_ids: str | list[str]) -> int:
        """Remove documents and their chunks; returns how many chunks went."""
        doc_ids = [doc_ids] if isinstance(doc_ids, str) else list(doc_ids)
        missing = [d for d in doc_ids if not self.store.has(d)]
        if missing:
            raise InputError(f"unknown document ids: {missing[:10]}")
        ids = self.store.chunk_ids(doc_ids)
        with self.store.transaction():
            self.store.delete(doc_ids)
        self.index.remove(ids)
        return len(ids)

    def __len__(self) -> int:
        return self.store.count()[0]

    # --- retrieval and generation -------------------------------------------------------------
    def retrieve(self, query: str, k: int = 5) -> list[Hit]:
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty")
        n = self.index.ntotal
        if n == 0:
            raise EmptyCorpusError("the index is empty: add documents first")
        if not isinstance(k, int) or k <= 0:
            raise InputError(f"k must be a positive integer, got {k!r}")
        if k > n:
            raise InputError(f"k={k} but the index holds only {n} chunks")
        q = self.embedder.encode_queries([query], show_progress_bar=False)
        scores, ids = self.index.search(q, k)
        rows = {r["chunk_id"]: r for r in self.store.chunks([int(i) for i in ids[0] if i >= 0])}
        hits = []
        for s, i in zip(scores[0], ids[0]):
            if (r := rows.get(int(i))) is not None:
                hits.append(Hit(rank=len(hits) + 1, score=float(s), **r))
        return hits

    def answer(self, query: str, k: int = 5, max_new_tokens: int = 256) -> Answer:
        hits = self.retrieve(query, k)
        ids, used = self.generator.rag_prompt(query, hits, max_new_tokens)
        text = self.generator.generate_ids(ids, max_new_tokens)
        return Answer(text=text, sources=used, cited=cited_numbers(text, len(used)))

    def stream_answer(self, query: str, k: int = 5, max_new_tokens: int = 256) -> AnswerStream:
        hits = self.retrieve(query, k)
        ids, used = self.generator.rag_prompt(query, hits, max_new_tokens)
        return AnswerStream(self.generator.stream_ids(ids, max_new_tokens), used)

    # --- persistence ----------------------------------------------------------------------------
    def info(self) -> dict:
        n_docs, n_chunks = self.store.count()
        return dict(backbone=self.backbone.name, embedder=self.embedder.kind, dim=self.embedder.dim,
                    adapter_hash=self.embedder.fingerprint, documents=n_docs, chunks=n_chunks,
                    index=self.index_config.kind, device=str(self.backbone.device),
                    dtype=str(self.backbone.dtype).removeprefix("torch."))

    def save(self, path: str | os.PathLike) -> Path:
        """Write a new version beside the old one, then swap the manifest atomically: a save killed
        at any point leaves the previous index loadable."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        version = f"v-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path))
        try:
            self.index.save(tmp / "index.faiss")
            self.store.save_to(tmp / "store.sqlite")
            self.embedder.save_pretrained(tmp / "embedder")
            files = {f"{version}/{p.relative_to(tmp)}": sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            for p in tmp.rglob("*"):
                if p.is_file():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
            os.replace(tmp, path / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        n_docs, n_chunks = self.store.count()
        manifest = Manifest(format_version=FORMAT_VERSION, library_version=library_version(),
                            backbone=self.backbone.name, backbone_fingerprint=self.backbone.fingerprint,
                            backbone_dtype=str(self.backbone.dtype).removeprefix("torch."),
                            embedder_kind=self.embedder.kind, embedder_dim=self.embedder.dim,
                            adapter_hash=self.embedder.fingerprint, index=self.index_config,
                            chunking=self.chunk_config, n_documents=n_docs, n_chunks=n_chunks, files=files,
                            created_at=datetime.now(timezone.utc).isoformat())
        atomic_write_json(path / MANIFEST, manifest.model_dump(mode="json"))
        for old in path.iterdir():  # only now is the old version garbage
            if old.is_dir() and old.name != version and (old.name.startswith("v-") or old.name.startswith(".tmp-")):
                shutil.rmtree(old, ignore_errors=True)
        return path

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
        return m

    @classmethod
    def load(cls, path: str | os.PathLike, *, model: Backbone | str | None = None, embedder=None,
             device="auto", dtype="auto", generation: GenerationConfig | dict | None = None) -> UnifiedRAG:
        """Load a saved index. By default the backbone and embedder recorded in it are rebuilt; pass
        your own to share weights already in memory, and a mismatch is refused, naming both sides."""
        path = Path(path)
        m = cls.read_manifest(path)
        for rel, digest in m.files.items():
            f = path / rel
            if not f.is_file():
                raise IndexLoadError(f"{path} is incomplete: {rel} is missing")
            if sha256_file(f) != digest:
                raise IndexLoadError(f"{path} is corrupt or truncated: {rel} does not match its checksum")
        version = Path(next(iter(m.files))).parts[0]
        if isinstance(embedder, Embedder):
            backbone = embedder.backbone
        elif isinstance(model, Backbone):
            backbone = model
        else:
            backbone = Backbone.from_pretrained(model or m.backbone, device=device, dtype=dtype)
        if backbone.fingerprint != m.backbone_fingerprint:
            raise EmbedderMismatchError(
                f"{path} was built with backbone {m.backbone} ({m.backbone_fingerprint}); "
                f"the one offered is {backbone.name} ({backbone.fingerprint})")
        dtype_now = str(backbone.dtype).removeprefix("torch.")
        if m.backbone_dtype and m.backbone_dtype != dtype_now:  # same weights, slightly different vectors
            warnings.warn(f"{path} was embedded in {m.backbone_dtype}, the backbone now runs in {dtype_now}; "
                          "scores shift slightly. Re-index, or load with dtype=" + repr(m.backbone_dtype), stacklevel=2)
        emb = load_embedder(embedder if embedder is not None else path / version / "embedder", backbone)
        if emb.fingerprint != m.adapter_hash or emb.dim != m.embedder_dim:
            raise EmbedderMismatchError(
                f"{path} was built with embedder {m.embedder_kind} (dim {m.embedder_dim}, adapter {m.adapter_hash}); "
                f"the one offered is {emb.kind} (dim {emb.dim}, adapter {emb.fingerprint})")
        rag = cls(backbone, emb, index=m.index, chunking=m.chunking, generation=generation)
        rag.index = VectorIndex.load(path / version / "index.faiss", m.embedder_dim, m.index)
        rag.store = DocStore.load_from(path / version / "store.sqlite")
        n_docs, n_chunks = rag.store.count()
        if (n_docs, n_chunks) != (m.n_documents, m.n_chunks) or rag.index.ntotal != n_chunks:
            raise IndexLoadError(f"{path} is inconsistent: manifest {m.n_documents} docs/{m.n_chunks} chunks, "
                                 f"store {n_docs}/{n_chunks}, index {rag.index.ntotal} vectors")
        return rag

    def __repr__(self) -> str:
        i = self.info()
        return f"UnifiedRAG({i['backbone']}, embedder={i['embedder']}, {i['documents']} docs, {i['chunks']} chunks)"
