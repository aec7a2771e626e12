"""The vector index: FAISS, inner product over L2-normalised embeddings (= cosine).

Exact search by default; IVF and HNSW are options. Vectors carry the chunk ids of the document
store (ID mapping), so documents can be deleted and replaced. With a GPU present the search copy
moves to it; the CPU index stays the source of truth for adds, deletes and saves.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import IndexLoadError, InputError
from .types import check_positive_int

log = logging.getLogger(__name__)


class IndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: int = Field(1024, ge=1)  # ivf: coarse clusters; trained on the first batch added
    nprobe: int = Field(16, ge=1)  # ivf: clusters visited per query
    hnsw_m: int = Field(32, ge=2)  # hnsw: neighbours per node
    ef_construction: int = Field(200, ge=1)
    ef_search: int = Field(64, ge=1)
    use_gpu: bool | None = None  # None: when faiss sees a GPU


class VectorIndex:
    def __init__(self, dim: int, config: IndexConfig | None = None, index: faiss.Index | None = None):
        self.dim, self.config = dim, config or IndexConfig()
        self.index = index if index is not None else self._new()
        self._gpu_index = None
        self._gpu_res = None
        self._apply_search_params()

    def _new(self) -> faiss.Index:
        c, ip = self.config, faiss.METRIC_INNER_PRODUCT
        if c.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if c.kind == "ivf":
            self._quantizer = faiss.IndexFlatIP(self.dim)  # keep a reference: faiss does not own it
            return faiss.IndexIVFFlat(self._quantizer, self.dim, c.nlist, ip)
        return faiss.IndexIDMap2(faiss.IndexHNSWFlat(self.dim, c.hnsw_m, ip))

    def _apply_search_params(self) -> None:
        inner = faiss.downcast_index(self.index.index) if hasattr(self.index, "id_map") else self.index
        if isinstance(inner, faiss.IndexHNSWFlat):
            inner.hnsw.efConstruction = self.config.ef_construction
            inner.hnsw.efSearch = self.config.ef_search
        if isinstance(self.index, faiss.IndexIVF):
            self.index.nprobe = self.config.nprobe

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """The ids of every stored vector (int64, in storage order)."""
        if hasattr(self.index, "id_map"):  # IndexIDMap(2): flat and hnsw
            return faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)
        ivf = faiss.extract_index_ivf(self.index)  # IVF keeps the ids in its inverted lists
        inv, out = ivf.invlists, []
        for lst in range(ivf.nlist):
            if n := inv.list_size(lst):
                out.append(faiss.rev_swig_ptr(inv.get_ids(lst), n).copy())
        return np.concatenate(out).astype(np.int64, copy=False) if out else np.empty(0, dtype=np.int64)

    def vectors(self, ids: list[int]) -> np.ndarray | None:
        """The stored vectors of `ids`, or None where the index cannot give them back (IVF keeps no id map)."""
        if not hasattr(self.index, "id_map"):
            return None
        try:
            return np.stack([self.index.reconstruct(int(i)) for i in ids]).astype(np.float32, copy=False)
        except RuntimeError:  # an id that is not stored
            return None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"vectors must have shape [n, {self.dim}], got {vectors.shape}")
        if not self.index.is_trained:
            if len(vectors) < self.config.nlist:
                raise InputError(f"an IVF index with nlist={self.config.nlist} needs at least that many vectors "
                                 f"in its first batch to train; got {len(vectors)}. Use kind='flat' or a smaller nlist")
            self.index.train(vectors)
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None

    def remove(self, ids: list[int] | np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        if self.config.kind == "hnsw":  # HNSW graphs cannot drop nodes: rebuild without them
            keep_ids = faiss.vector_to_array(self.index.id_map)
            vecs = self.index.index.reconstruct_n(0, self.index.ntotal)
            keep = ~np.isin(keep_ids, ids)
            self.index = self._new()
            self._apply_search_params()
            if keep.any():
                self.index.add_with_ids(vecs[keep], keep_ids[keep])
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
        self._gpu_index = None

    def _searcher(self) -> faiss.Index:
        want = self.config.use_gpu
        if want is None:
            want = faiss.get_num_gpus() > 0 and self.config.kind != "hnsw"
        if not want:
            return self.index
        if self._gpu_index is None:
            if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
                raise InputError("use_gpu=True but faiss sees no GPU")
            self._gpu_res = self._gpu_res or faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self.index)
            log.info("FAISS %s index (%d vectors) moved to GPU 0", self.config.kind, self.ntotal)
        return self._gpu_index

    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids). `ef_search` (HNSW) and `nprobe` (IVF) override the config for this call
        only: a larger value trades speed for recall. HNSW never looks at fewer than k candidates."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, max(self.ntotal, 1))
        for name, v in (("ef_search", ef_search), ("nprobe", nprobe)):
            if v is not None:
                check_positive_int(v, name)
        params = None
        if self.config.kind == "hnsw" and (ef_search is not None or k > self.config.ef_search):
            params = faiss.SearchParametersHNSW(efSearch=max(ef_search or self.config.ef_search, k))
        elif self.config.kind == "ivf" and nprobe is not None:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
        if params is None:
            return self._searcher().search(queries, k)
        # Per-call parameters on the CPU index, the source of truth (the GPU copy keeps the config's).
        return self.index.search(queries, k, params=params)

    def save(self, path: str | Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, dim: int, config: IndexConfig) -> VectorIndex:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise IndexLoadError(f"FAISS index {path} is unreadable: {str(e).splitlines()[0]}") from None
        if index.d != dim:
            raise IndexLoadError(f"FAISS index {path} has dim {index.d}, the manifest says {dim}")
        return cls(dim, config, index=index)
