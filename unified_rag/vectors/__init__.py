"""Vector stores: where the chunk vectors live and are searched. One file per store, each registered
by kind (pyproject.toml's `unified_rag.vector_stores` entry points, or `registry.register`):

    faiss_store.py   VectorIndex: FAISS flat, IVF or HNSW, on the GPU when there is one (the default)
    milvus_store.py  MilvusIndex: a Milvus collection, embedded (Milvus Lite) or on a server (an extra)

A store takes (dim, config), its config being an instance of its `Config` (an IndexConfig subclass),
and offers ntotal, ids(), vectors(ids), add(ids, vectors), remove(ids), search(queries, k,
ef_search=, nprobe=), save_to(folder) and load_from(folder, dim, config), with FILE naming what it
writes into an index version folder. The pipeline calls only the functions below, so it never
branches on the engine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from ..errors import InputError
from ..registry import lookup, names
from ..types import check_positive_int


def check_search_params(ef_search: int | None, nprobe: int | None) -> None:
    """Per-search overrides are positive integers or None, for every engine."""
    for name, v in (("ef_search", ef_search), ("nprobe", nprobe)):
        if v is not None:
            check_positive_int(v, name)


class IndexConfig(BaseModel):
    """Which vector store holds the vectors, and its options. Each store has its own config class
    (`Config` on the store: FaissConfig for flat / ivf / hnsw, MilvusConfig for milvus), so an option
    another store would ignore is an error rather than silently unused. `IndexConfig(kind=..., **options)`
    and `IndexConfig.model_validate({...})` build the kind's own class; a plug-in store without a
    `Config` takes no options."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "flat"  # a registered vector store: flat, ivf, hnsw (FAISS), milvus (an extra), or a plug-in's

    def __new__(cls, *args, **data):
        if cls is IndexConfig:  # the base builds the kind's own config; __init__ then validates against it
            cls = config_class(data.get("kind", "flat"))
        return super().__new__(cls)

    @classmethod
    def model_validate(cls, obj, *args, **kwargs):
        own = config_class(obj.get("kind", "flat")) if cls is IndexConfig and isinstance(obj, dict) else cls
        if own is not cls:
            return own.model_validate(obj, *args, **kwargs)
        return super().model_validate(obj, *args, **kwargs)

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        if kind not in names("vector_stores"):
            raise ValueError(f"unknown index kind {kind!r}: one of {', '.join(names('vector_stores'))}")
        return kind


def config_class(kind) -> type[IndexConfig]:
    """The config class of a store kind (IndexConfig itself for an unknown kind, whose validation then
    names the known ones, and for a plug-in without a `Config`)."""
    store = lookup("vector_stores", kind) if isinstance(kind, str) else None
    return getattr(store, "Config", None) or IndexConfig


def stored_index_config(data: dict) -> IndexConfig:
    """An index config as a manifest holds it: today's layout, or the one of indexes saved before each
    store had its own config class, with every store's options at the top level (the other stores'
    options are dropped, and Milvus's renamed)."""
    if isinstance(data, dict) and "milvus_collection" in data:
        cls = config_class(data.get("kind", "flat"))
        data = dict(data, uri=data.get("milvus_uri"), collection=data.get("milvus_collection"))
        data = {k: v for k, v in data.items() if k in cls.model_fields}
    return IndexConfig.model_validate(data)


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
