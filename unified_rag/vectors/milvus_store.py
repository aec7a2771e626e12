"""A vector index on Milvus, an engine that scales out: the same interface as the FAISS `VectorIndex`.

`IndexConfig(kind="milvus")` (a MilvusConfig) keeps the vectors in a Milvus collection:
- embedded (the default, `uri=None`): Milvus Lite, in a working folder of this process. A save
  writes a fresh Milvus Lite database into the index's version folder, and a load works on a copy,
  so saved versions stay immutable like the FAISS ones;
- a server or cluster (`uri="http://host:19530"`, token from `MILVUS_TOKEN`): the collection
  lives there, and a save records only where (`index.milvus`). Search, add and delete go to the server.

Vectors are L2-normalised and scored by inner product (= cosine), with a FLAT index, so results equal
FAISS flat's on the same vectors. Ids are the document store's chunk ids.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..errors import IndexLoadError, InputError
from . import IndexConfig, check_search_params

META_FILE = "index.milvus"  # JSON: where the collection is, its width and size
EMBEDDED_DB = "index.milvus.db"  # Milvus Lite's folder, beside META_FILE, in embedded mode
_BATCH = 2048  # rows per insert / query page: well under Milvus's message size limit


def _client(uri: str):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise InputError("IndexConfig(kind='milvus') needs `pip install unified-rag[milvus]` "
                         "(pymilvus and milvus-lite)") from None
    return MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))


class MilvusConfig(IndexConfig):
    kind: Literal["milvus"] = "milvus"
    uri: str | None = None  # a server's URI; None = embedded Milvus Lite
    collection: str = Field("unified_rag", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class MilvusIndex:
    FILE = META_FILE
    Config = MilvusConfig

    def __init__(self, dim: int, config: MilvusConfig, *, _db: str | None = None):
        self.dim, self.config = dim, config
        self.collection = config.collection
        self.server = config.uri is not None
        if self.server:
            uri = config.uri
        else:  # embedded: a working folder of ours, removed when this object goes
            work = tempfile.mkdtemp(prefix="urag-milvus-")
            weakref.finalize(self, shutil.rmtree, work, True)
            uri = str(Path(work) / "milvus.db")
            if _db is not None:
                shutil.copytree(_db, uri)
        self.uri = uri
        self.client = _client(uri)
        if not self.client.has_collection(self.collection):
            self._create()
        self.client.load_collection(self.collection)  # a collection answers only once loaded

    def _create(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        self.client.create_collection(self.collection, schema=schema)
        # sync=False: a FLAT index has nothing to build, and waiting polls an RPC Milvus Lite lacks
        self.client.create_index(self.collection, params, sync=False)

    @property
    def ntotal(self) -> int:
        res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def _pages(self, fields: list[str]):
        """Every row, in pages. A server pages with an iterator (plain queries stop at 16,384 rows);
        Milvus Lite has no iterator but answers one unbounded query."""
        every = f"id >= {np.iinfo(np.int64).min}"
        if not self.server:
            yield self.client.query(self.collection, filter=every, output_fields=fields)
            return
        it = self.client.query_iterator(self.collection, batch_size=_BATCH, filter=every, output_fields=fields)
        try:
            while page := it.next():
                yield page
        finally:
            it.close()

    def ids(self) -> np.ndarray:
        return np.asarray([r["id"] for page in self._pages(["id"]) for r in page], dtype=np.int64)

    def vectors(self, ids: list[int]) -> np.ndarray | None:
        rows = {r["id"]: r["vector"] for r in self.client.get(self.collection, ids=[int(i) for i in ids],
                                                             output_fields=["vector"])}
        if any(int(i) not in rows for i in ids):
            return None
        return np.asarray([rows[int(i)] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"vectors must have shape [n, {self.dim}], got {vectors.shape}")
        ids = np.asarray(ids, dtype=np.int64)
        for s in range(0, len(ids), _BATCH):
            self.client.insert(self.collection, [{"id": int(i), "vector": v.tolist()}
                                                 for i, v in zip(ids[s:s + _BATCH], vectors[s:s + _BATCH])])

    def remove(self, ids) -> None:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64)]
        if ids:
            self.client.delete(self.collection, ids=ids)

    def search(self, queries: np.ndarray, k: int, *, ef_search: int | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), padded with (-inf, -1) like FAISS where fewer than k are held (no count
        query first: that would be a second round trip per search). ef_search / nprobe are FAISS's
        and are checked but unused: the collection's FLAT index is exact."""

        check_search_params(ef_search, nprobe)
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        res = self.client.search(self.collection, data=queries.tolist(), limit=k,
                                 search_params={"metric_type": "IP"}, output_fields=[])
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for r, hits in enumerate(res):
            for c, h in enumerate(hits[:k]):
                scores[r, c], ids[r, c] = h["distance"], h["id"]
        return scores, ids

    def save(self, folder: str | Path) -> None:
        """Into an index version folder: META_FILE, and in embedded mode a fresh copy of the collection."""
        folder = Path(folder)
        meta = dict(uri=self.config.uri, collection=self.collection, dim=self.dim, n=self.ntotal)
        if not self.server:
            copy = _client(str(folder / EMBEDDED_DB))
            target = MilvusIndex.__new__(MilvusIndex)
            target.dim, target.collection, target.client = self.dim, self.collection, copy
            target._create()
            copy.load_collection(self.collection)
            for page in self._pages(["id", "vector"]):
                for s in range(0, len(page), _BATCH):
                    rows = page[s:s + _BATCH]
                    target.add(np.asarray([r["id"] for r in rows], dtype=np.int64),
                               np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(-1, self.dim))
            copy.close()
        (folder / META_FILE).write_text(json.dumps(meta))

    def save_to(self, folder: Path) -> None:
        self.save(folder)

    @classmethod
    def load_from(cls, folder: Path, dim: int, config: MilvusConfig) -> MilvusIndex:
        return cls.load(folder, dim, config)

    @classmethod
    def load(cls, folder: str | Path, dim: int, config: MilvusConfig) -> MilvusIndex:
        folder = Path(folder)
        try:
            meta = json.loads((folder / META_FILE).read_text())
            assert isinstance(meta, dict) and meta.get("dim") == dim
        except (OSError, ValueError, AssertionError):
            raise IndexLoadError(f"{folder / META_FILE} is missing, unreadable, or not for dim {dim}") from None
        if config.uri is not None:
            return cls(dim, config)
        db = folder / EMBEDDED_DB
        if not db.is_dir():
            raise IndexLoadError(f"{db} is missing: an embedded Milvus index keeps its collection there")
        return cls(dim, config, _db=str(db))
