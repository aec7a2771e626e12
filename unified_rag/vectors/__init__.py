"""Vector stores: where the chunk vectors live and are searched. One file per store, each registered
by kind (pyproject.toml's `unified_rag.vector_stores` entry points, or `registry.register`):

    faiss_store.py   VectorIndex: FAISS flat, IVF or HNSW, on the GPU when there is one (the default)
    milvus_store.py  MilvusIndex: a Milvus collection, embedded (Milvus Lite) or on a server (an extra)

A store takes (dim, IndexConfig), and offers ntotal, ids(), vectors(ids), add(ids, vectors),
remove(ids), search(queries, k, ef_search=, nprobe=), save_to(folder) and load_from(folder, dim,
config), with FILE naming what it writes into an index version folder. The pipeline calls only the
functions below, so it never branches on the engine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import InputError
from ..registry import lookup, names
from ..types import check_positive_int


def check_search_params(ef_search: int | None, nprobe: int | None) -> None:
    """Per-search overrides are positive integers or None, for every engine."""
    for name, v in (("ef_search", ef_search), ("nprobe", nprobe)):
        if v is not None:
            check_positive_int(v, name)


class IndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "flat"  # a registered vector store: flat, ivf, hnsw (FAISS), milvus (an extra), or a plug-in's
    nlist: int = Field(1024, ge=1)  # ivf: coarse clusters; trained once 39 * nlist vectors are held
    nprobe: int = Field(16, ge=1)  # ivf: clusters visited per query
    hnsw_m: int = Field(32, ge=2)  # hnsw: neighbours per node
    ef_construction: int = Field(200, ge=1)
    ef_search: int | None = Field(None, ge=1)  # hnsw: None = scaled with the index size (auto_ef_search)
    use_gpu: bool | None = None  # None: when faiss sees a GPU
    milvus_uri: str | None = None  # milvus: a server's URI; None = embedded Milvus Lite
    milvus_collection: str = Field("unified_rag", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        if kind not in names("vector_stores"):
            raise ValueError(f"unknown index kind {kind!r}: one of {', '.join(names('vector_stores'))}")
        return kind


class VectorStore(Protocol):
    FILE: str
    dim: int
    config: IndexConfig

    @property
    def ntotal(self) -> int: ...
    def ids(self) -> np.ndarray: ...
    def vectors(self, ids: list[int]) -> np.ndarray | None: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids) -> None: ...
    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...
    def save_to(self, folder: Path) -> None: ...


def store_class(kind: str) -> type:
    store = lookup("vector_stores", kind)
    if store is None:
        raise InputError(f"unknown index kind {kind!r}: one of {', '.join(names('vector_stores'))}")
    return store


def index_file(config: IndexConfig) -> str:
    """The file in an index version folder that holds (or, for a Milvus server, points to) the vectors."""
    return store_class(config.kind).FILE


def open_index(dim: int, config: IndexConfig) -> VectorStore:
    return store_class(config.kind)(dim, config)


def save_index(index: VectorStore, folder: Path) -> None:
    index.save_to(Path(folder))


def load_index(folder: Path, dim: int, config: IndexConfig) -> VectorStore:
    return store_class(config.kind).load_from(Path(folder), dim, config)
