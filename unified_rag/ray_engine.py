"""Corpus encoding on Ray Data: many processes (or machines, or GPUs) embed, one process indexes.

    documents ──from_items──▶ chunk (map_batches, tokenizer only) ──▶ encode (map_batches, actor pool:
    one backbone per actor, per GPU when there are GPUs) ──▶ parquet shards ──▶ store + index (driver)

The driver reads the files with the library's own readers, and in the end adds the shards to the
store and the index in document order, so the result equals `add_documents` in one process: the
same chunk ids, and vectors within float tolerance (batches are cut differently).

Workers rebuild the backbone from `model` (an HF id or a path every node can read; None = the
offline default) and receive the embedder's and tokenizer's files by value, so nothing but the model
must be shared. On a cluster, pass `shards=` a folder every node can write (NFS, or a mounted bucket).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError, ModelLoadError
from .readers import as_documents


def _pack(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _unpack(files: dict[str, bytes]) -> Path:
    out = Path(tempfile.mkdtemp(prefix="urag-ray-"))
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return out


class _Chunk:
    """map_batches stage 1: documents -> chunk rows, on the backbone's tokenizer alone."""

    def __init__(self, tokenizer_files: dict[str, bytes], chunking: dict):
        from transformers import AutoTokenizer

        from .chunking import ChunkConfig

        self.tokenizer = AutoTokenizer.from_pretrained(_unpack(tokenizer_files))
        self.config = ChunkConfig(**chunking)

    def __call__(self, batch: dict) -> dict:
        from .chunking import chunk_text

        cols: dict[str, list] = {k: [] for k in ("order", "chunk_index", "text", "start", "end")}
        for order, text in zip(batch["order"], batch["text"]):
            for i, (t, a, b) in enumerate(chunk_text(str(text), self.tokenizer, self.config)):
                for k, v in zip(cols, (int(order), i, t, a, b)):
                    cols[k].append(v)
        return {k: np.asarray(v, dtype=object if k == "text" else np.int64) for k, v in cols.items()}


class _Encode:
    """map_batches stage 2 (an actor): one backbone and embedder per actor, loaded once."""

    def __init__(self, model, dtype: str, embedder_files: dict[str, bytes], fingerprint: str):
        from unified_rag.embedder import Embedder

        from .backbone import Backbone

        backbone = Backbone.from_pretrained(model, dtype=dtype)
        self.embedder = Embedder.from_pretrained(_unpack(embedder_files), backbone=backbone)
        if self.embedder.fingerprint != fingerprint:
            raise ModelLoadError(f"the worker's embedder ({self.embedder.fingerprint}) differs from the driver's "
                                 f"({fingerprint}): `model` must name the driver's backbone")

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        vecs = self.embedder.encode_documents(texts, batch_size=len(texts), show_progress_bar=False)
        return {**batch, "vector": list(vecs.astype(np.float32))}


def add_documents_ray(rag, docs, *, model: str | os.PathLike | None = None, address: str | None = None,
                      actors: int = 2, batch_size: int = 32, shards: str | os.PathLike | None = None,
                      show_progress_bar: bool = True) -> list[str]:
    """Like `rag.add_documents(docs)`, with chunking and encoding on Ray. `address`: a running
    cluster ("auto", "ray://host:10001"); None starts a local Ray. `actors`: encoding actors, each with
    its own backbone (and one GPU each when the cluster has GPUs). Returns the ids added."""
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs `pip install unified-rag[ray]`") from None
    from unified_rag.embedder import Embedder

    if not isinstance(rag.embedder, Embedder):
        raise InputError("the Ray engine encodes with the library's own embedders")
    if not isinstance(actors, int) or isinstance(actors, bool) or actors < 1:
        raise InputError(f"actors must be a positive integer, got {actors!r}")
    documents = as_documents(docs)
    seen = {d.id: d for d in documents}  # the last copy of a repeated id wins, as in add_documents
    if not seen:
        raise InputError("no documents to index")
    ordered = list(seen.values())
    work = Path(tempfile.mkdtemp(prefix="urag-ray-driver-"))
    try:
        rag.embedder.save_pretrained(work / "embedder")
        rag.backbone.tokenizer.save_pretrained(work / "tokenizer")
        shard_dir = Path(shards) if shards is not None else work / "shards"
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     include_dashboard=False, configure_logging=False)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = show_progress_bar
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        # Several blocks per actor, or a small corpus arrives as one block and only one actor works.
        ds = ray.data.from_items([{"order": i, "text": d.text} for i, d in enumerate(ordered)],
                                 override_num_blocks=max(1, min(len(ordered), 4 * actors)))
        ds = ds.map_batches(_Chunk, fn_constructor_kwargs=dict(tokenizer_files=_pack(work / "tokenizer"),
                                                               chunking=rag.chunk_config.model_dump()),
                            batch_size=None, concurrency=1, num_cpus=0.25)  # a block per call: keeps the blocks apart
        ds = ds.map_batches(_Encode, fn_constructor_kwargs=dict(
            model=model, dtype=str(rag.backbone.dtype).removeprefix("torch."),
            embedder_files=_pack(work / "embedder"), fingerprint=rag.embedder.fingerprint),
            batch_size=batch_size, concurrency=actors, num_gpus=1 if gpus else 0,
            num_cpus=min(1.0, max(0.25, (resources.get("CPU", 1) - 0.5) / actors)) if not gpus else 0)
        # Writing is light: a small CPU share, so that it never waits for the encoding actors to end.
        ds.write_parquet(str(shard_dir), ray_remote_args={"num_cpus": 0.1})
        return _index_shards(rag, ordered, shard_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _index_shards(rag, ordered: list, shard_dir: Path) -> list[str]:
    """Read every shard, then store and index the documents in their input order (the ids that
    one process would give them)."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(shard_dir))
    order, idx = table["order"].to_numpy(), table["chunk_index"].to_numpy()
    texts, starts, ends = table["text"].to_pylist(), table["start"].to_numpy(), table["end"].to_numpy()
    vectors = np.asarray(table["vector"].to_pylist(), dtype=np.float32)
    by_doc: dict[int, list[int]] = {}
    for row in np.lexsort((idx, order)):
        by_doc.setdefault(int(order[row]), []).append(int(row))
    group, rows = [], []
    for i, d in enumerate(ordered):
        if i in by_doc:
            group.append((d, [(texts[r], int(starts[r]), int(ends[r])) for r in by_doc[i]]))
            rows.extend(by_doc[i])
    if not rows:
        raise InputError("the documents hold no indexable text")
    rag._commit_vectors(group, vectors[rows])
    return [d.id for d in ordered]
