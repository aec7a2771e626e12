"""The FAISS vector store: inner product over L2-normalised embeddings (= cosine).

Exact search by default; IVF and HNSW are options. Vectors carry the chunk ids of the document
store (ID mapping), so documents can be deleted and replaced. With a GPU present the search copy
moves to it; the CPU index stays the source of truth for adds, deletes and saves.

Upkeep that scales:
- IVF stays exact (flat) until it holds `IVF_TRAIN_PER_LIST * nlist` vectors, FAISS's own floor for
  k-means; it then trains on a sample of everything held and moves the vectors over.
- HNSW graphs cannot drop nodes. A delete marks the id (a tombstone) and searches filter it out;
  the graph is rebuilt only once tombstones pass `HNSW_REBUILD_FRACTION` of its nodes. Tombstones
  are saved beside the index (`<name>.deleted.json`).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from pydantic import Field

from ..errors import IndexLoadError, InputError
from . import IndexConfig, check_search_params  # noqa: F401  (check_search_params: its old import path)

log = logging.getLogger(__name__)

IVF_TRAIN_PER_LIST = 39  # FAISS warns below 39 training points per centroid
IVF_TRAIN_SAMPLE_PER_LIST = 256  # k-means gains little from more; caps the training time
HNSW_REBUILD_FRACTION = 0.25  # filtered HNSW search loses recall as the dead share grows


def auto_ef_search(n: int) -> int:
    """HNSW's beam for recall@10 >= 0.95 at n vectors: 256 at 100k and 1,024 at 1M, as measured
    (`unified-rag bench index-scale`: recall 0.983 and 0.980; 128 and 512 fall short), so ef grows
    as n^0.6 between them. Rounded up to a power of two, within [64, 4096]; sizes above 1M are
    extrapolated."""
    ef = 256 * (max(n, 1) / 100_000) ** 0.6
    return int(min(4096, max(64, 2 ** math.ceil(math.log2(ef)))))


class FaissConfig(IndexConfig):
    kind: Literal["flat", "ivf", "hnsw"] = "flat"  # exact; clustered; graph
    nlist: int = Field(1024, ge=1)  # ivf: coarse clusters; trained once 39 * nlist vectors are held
    nprobe: int = Field(16, ge=1)  # ivf: clusters visited per query
    hnsw_m: int = Field(32, ge=2)  # hnsw: neighbours per node
    ef_construction: int = Field(200, ge=1)
    ef_search: int | None = Field(None, ge=1)  # hnsw: None = scaled with the index size (auto_ef_search)
    use_gpu: bool | None = None  # None: when faiss sees a GPU


class VectorIndex:
    """FAISS: kinds "flat", "ivf" and "hnsw"."""

    FILE = "index.faiss"  # what it writes into an index version folder
    Config = FaissConfig

    def __init__(self, dim: int, config: FaissConfig | None = None, index: faiss.Index | None = None):
        self.dim, self.config = dim, config or FaissConfig()
        self.index = index if index is not None else self._new()
        self.deleted: set[int] = set()  # hnsw tombstones: in the graph, never returned
        self._gpu_index = None
        self._gpu_res = None
        self._apply_search_params()

    def _new(self, trained_ivf: bool = False) -> faiss.Index:
        c, ip = self.config, faiss.METRIC_INNER_PRODUCT
        if c.kind == "flat" or (c.kind == "ivf" and not trained_ivf):  # ivf starts exact, see _train_ivf
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if c.kind == "ivf":
            self._quantizer = faiss.IndexFlatIP(self.dim)  # keep a reference: faiss does not own it
            return faiss.IndexIVFFlat(self._quantizer, self.dim, c.nlist, ip)
        return faiss.IndexIDMap2(faiss.IndexHNSWFlat(self.dim, c.hnsw_m, ip))

    @property
    def staging(self) -> bool:
        """True while an IVF index is still exact, waiting for enough vectors to train on."""
        return self.config.kind == "ivf" and not isinstance(self.index, faiss.IndexIVF)

    def _apply_search_params(self) -> None:
        inner = faiss.downcast_index(self.index.index) if hasattr(self.index, "id_map") else self.index
        if isinstance(inner, faiss.IndexHNSWFlat):  # efSearch is set per search (it follows the size)
            inner.hnsw.efConstruction = self.config.ef_construction
        if isinstance(self.index, faiss.IndexIVF):
            self.index.nprobe = self.config.nprobe

    @property
    def ntotal(self) -> int:
        """Live vectors (HNSW tombstones excluded)."""
        return int(self.index.ntotal) - len(self.deleted)

    def ids(self) -> np.ndarray:
        """The ids of every live vector (int64, in storage order)."""
        if hasattr(self.index, "id_map"):  # IndexIDMap(2): flat, hnsw, ivf while staging
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)
            return ids[~np.isin(ids, list(self.deleted))] if self.deleted else ids
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
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        if self.staging and self.index.ntotal >= IVF_TRAIN_PER_LIST * self.config.nlist:
            self._train_ivf()
        self._gpu_index = None

    def _held(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything an ID-mapped index holds, tombstones included, in storage order."""
        return (faiss.vector_to_array(self.index.id_map).astype(np.int64),
                self.index.index.reconstruct_n(0, self.index.ntotal))

    def _train_ivf(self) -> None:
        """Train IVF's centroids on a seeded sample of every vector held, then move them all over."""
        ids, vecs = self._held()
        n_sample = min(len(vecs), IVF_TRAIN_SAMPLE_PER_LIST * self.config.nlist)
        sample = vecs[np.sort(np.random.default_rng(0).choice(len(vecs), n_sample, replace=False))]
        ivf = self._new(trained_ivf=True)
        ivf.train(sample)
        ivf.add_with_ids(vecs, ids)
        self.index = ivf
        self._apply_search_params()
        log.info("IVF index trained on %d of %d vectors (nlist=%d)", n_sample, len(vecs), self.config.nlist)

    def remove(self, ids: list[int] | np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        if self.config.kind == "hnsw":
            held = faiss.vector_to_array(self.index.id_map)
            self.deleted.update(int(i) for i in ids[np.isin(ids, held)])
            if len(self.deleted) > HNSW_REBUILD_FRACTION * self.index.ntotal:
                self.compact()
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
        self._gpu_index = None

    def compact(self) -> None:
        """Rebuild the HNSW graph without its tombstones (deletes call this once they pass the threshold)."""
        if not self.deleted:
            return
        held, vecs = self._held()
        keep = ~np.isin(held, list(self.deleted))
        self.index = self._new()
        self._apply_search_params()
        if keep.any():
            self.index.add_with_ids(vecs[keep], held[keep])
        log.info("HNSW graph rebuilt without %d deleted vectors (%d kept)", len(self.deleted), int(keep.sum()))
        self.deleted = set()
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
        check_search_params(ef_search, nprobe)
        params = None
        if self.config.kind == "hnsw":
            ef = ef_search or self.config.ef_search or auto_ef_search(self.ntotal)
            params = faiss.SearchParametersHNSW(efSearch=max(ef, k))
            if self.deleted:  # the selector sees our ids (IndexIDMap translates); locals keep both alive
                dead = faiss.IDSelectorBatch(np.fromiter(self.deleted, np.int64))
                alive = faiss.IDSelectorNot(dead)
                params.sel = alive
        elif self.config.kind == "ivf" and nprobe is not None and not self.staging:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
        if params is None:
            return self._searcher().search(queries, k)
        # Per-call parameters on the CPU index, the source of truth (the GPU copy keeps the config's).
        return self.index.search(queries, k, params=params)

    def save(self, path: str | Path) -> None:
        faiss.write_index(self.index, str(path))
        if self.deleted:  # JSON, like every other sidecar: no pickle
            Path(f"{path}.deleted.json").write_text(json.dumps(sorted(self.deleted)))

    def save_to(self, folder: Path) -> None:
        self.save(Path(folder) / self.FILE)

    @classmethod
    def load_from(cls, folder: Path, dim: int, config: FaissConfig) -> VectorIndex:
        return cls.load(Path(folder) / cls.FILE, dim, config)

    @classmethod
    def load(cls, path: str | Path, dim: int, config: FaissConfig) -> VectorIndex:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise IndexLoadError(f"FAISS index {path} is unreadable: {str(e).splitlines()[0]}") from None
        if index.d != dim:
            raise IndexLoadError(f"FAISS index {path} has dim {index.d}, the manifest says {dim}")
        out = cls(dim, config, index=index)
        if (side := Path(f"{path}.deleted.json")).is_file():
            try:
                dead = json.loads(side.read_text())
                assert isinstance(dead, list) and all(isinstance(i, int) for i in dead)
            except (ValueError, AssertionError):
                raise IndexLoadError(f"{side} is not a JSON list of ids") from None
            out.deleted = set(dead)
        return out
