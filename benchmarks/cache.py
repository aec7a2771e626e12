"""Encoded-corpus cache: <root>/<embedder fingerprint>-<dtype>-<device>/<texts hash>-<role>.npy + .json.

The key is (embedder fingerprint, hash of the exact texts, role): a changed adapter, config, backbone
or corpus misses, and the same corpus encoded for another suite or metric hits. The dtype and device
are part of it because the backbone fingerprint deliberately rounds weights to bf16 (a bf16 and a
float32 load share it), while their embeddings differ. Plain .npy, read
with allow_pickle=False; written atomically, sidecar last, so a killed run leaves no half entry.
"""
from __future__ import annotations

import io
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from unified_rag.io import atomic_write_bytes, atomic_write_json

from .data import content_hash

ROLES = ("query", "document", "text")


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    if root:
        return Path(root)
    from unified_rag.backbone import cache_root

    return cache_root() / "bench"


def entry_dir(method, root: str | os.PathLike | None = None) -> Path:
    bb = getattr(method, "backbone", None)
    model = bb.model if bb is not None else getattr(method, "model", None)  # ours / sentence-transformers
    if model is None:  # something else with encode_*: its fingerprint alone
        return cache_dir(root) / method.fingerprint
    p = next(model.parameters())
    return cache_dir(root) / f"{method.fingerprint}-{str(p.dtype).removeprefix('torch.')}-{p.device.type}"


def encode(method, texts: list[str], role: str, *, root: str | os.PathLike | None = None, batch_size: int = 32,
           use_cache: bool = True, instruction: str | None = None) -> tuple[np.ndarray, dict]:
    """L2-normalised float32 vectors for `texts` and the entry's metadata (hit, seconds to encode).
    `instruction` replaces the method's own for this role (backbone embedders only)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    extra = {}
    if instruction is not None and hasattr(method, "config") and role != "text":
        extra = {"instruction": instruction}
    key = f"{content_hash([texts, extra] if extra else texts)}-{role}"
    folder = entry_dir(method, root)
    npy, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if use_cache and meta_path.is_file() and npy.is_file():
        vecs = np.load(npy, allow_pickle=False)
        meta = json.loads(meta_path.read_text())
        if vecs.shape == (len(texts), meta["dim"]):
            return vecs, {**meta, "cache_hit": True}
    fn = {"query": method.encode_queries, "document": method.encode_documents}.get(role)
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # truncation to max_length is the benchmark's setting, not news
        warnings.filterwarnings("ignore", message=".*truncated.*")
        if fn is None:
            vecs = method.encode(texts, batch_size=batch_size, show_progress_bar=len(texts) >= 256)
        else:
            vecs = fn(texts, batch_size=batch_size, show_progress_bar=len(texts) >= 256, **extra)
    seconds = time.perf_counter() - t0
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    meta = dict(fingerprint=method.fingerprint, kind=method.kind, role=role, n=len(texts), dim=int(vecs.shape[1]),
                seconds=round(seconds, 3), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra)
    if use_cache:
        buf = io.BytesIO()
        np.save(buf, vecs, allow_pickle=False)
        atomic_write_bytes(npy, buf.getvalue())
        atomic_write_json(meta_path, meta)
    return vecs, {**meta, "cache_hit": False}
