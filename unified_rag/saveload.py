"""`UnifiedRAG.save` and `load`: the pipeline's index, store and embedder to and from an index dir
(its layout: persist.py), and the merge that keeps every writer's changes.

No lost updates: each save records a generation in the manifest, and a UnifiedRAG remembers, per dir,
the generation it last read or wrote there and where its own log of adds and deletes stood then. A
save that finds a newer generation replays this object's changes since then onto that version.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .backbone import Backbone, recorded_dtype
from .embedder import Embedder, load_embedder
from .errors import EmbedderMismatchError, IndexChangedError, IndexLoadError, InputError, ModelLoadError
from .generator import GenerationConfig
from .vectors import load_index
from .io import check_save_target
from .persist import (Manifest, current_generation, manifest_version, read_manifest, verify, write_version,
                      writer_lock)
from .store import DocStore
from .types import Document

_LOAD_TRIES = 4


class Persistent:
    """save() and load() of `UnifiedRAG` (a mixin): the pipeline's index, store and embedder to and from
    an index dir, and the merge that keeps every writer's changes."""

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
            newer = type(self)._load_version(path, m, manifest_version(path, m), self.backbone, self.embedder,
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
             generator_adapter="auto", verify: bool = False) -> Any:
        """Load a saved index. By default the backbone and embedder recorded in it are rebuilt; pass
        your own to share weights already in memory, and a mismatch is refused, naming both sides.
        Every file is checked for presence and size; `verify=True` also checks every SHA-256 (at
        1M vectors the flat index alone is 2.2 GB) and the document store's pages, as `unified-rag
        verify DIR` does.
        `dtype="auto"` rebuilds the backbone in the dtype the index was embedded in, where this device
        has hardware for it (its vectors and new queries then agree).
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
                        backbone = Backbone.from_pretrained(model or m.backbone, device=device, dtype=recorded_dtype(
                            m.backbone_dtype, device) if dtype == "auto" else dtype)
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
                      generation: GenerationConfig | dict | None, generator_adapter="auto") -> Any:
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
