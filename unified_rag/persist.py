"""An index dir on disk: version folders, the manifest that commits one of them, the writers' lock,
garbage collection and verification.

    idx/manifest.json       the commit point: names one version folder, each file's SHA-256 and size,
                            and the generation (how many saves this dir has seen)
    idx/v-<time>-<hex>/     index.faiss (or the vector store's files), store.sqlite, embedder/
    idx/.unified-rag.lock   held by writers only; readers never wait

A save writes a new version folder, then replaces the manifest atomically: a save killed at any
point leaves the old or the new version loadable. `UnifiedRAG.save`/`load` (saveload.py) use these.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath

from filelock import FileLock, Timeout
from pydantic import BaseModel, SerializeAsAny, ValidationError, field_validator

from .chunking import ChunkConfig
from .errors import IndexLoadError, IndexLockedError
from .vectors import IndexConfig, index_file, save_index, stored_index_config
from .io import atomic_dir, atomic_write_json, sha256_file
from .store import DocStore

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
LOCK = ".unified-rag.lock"  # writers (save) hold it; readers (load) never touch it
OWNED = ".unified-rag-owned"  # written first into every folder save() makes; cleanup deletes only those
_OWNED_TEXT = "unified-rag: made by save(); removed once manifest.json no longer names this folder\n"
_VERSION_RE = re.compile(r"v-\d{8}T\d{6}-[0-9a-f]{6}(?:[0-9a-f]{6})?")  # 6 hex: names of unified-rag <= 0.2
# atomic_dir's temp folders; `.tmp-urag-<hex>`: those of unified-rag <= 0.3
_TMP_RE = re.compile(r"\.(?:tmp-urag-|v-\d{8}T\d{6}-[0-9a-f]{12}\.tmp-)[0-9a-f]{32}")
_MANIFEST_TMP_RE = re.compile(re.escape(MANIFEST) + r"\.[a-z0-9_]{8}\.tmp")  # atomic_write_bytes' mkstemp
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


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
    index: SerializeAsAny[IndexConfig]  # the store's own config class (stored_index_config reads it)
    chunking: ChunkConfig
    n_documents: int
    n_chunks: int
    files: dict[str, str]  # relative path -> sha256
    sizes: dict[str, int] = {}  # relative path -> bytes (absent in indexes saved before 0.2.1)
    created_at: str
    # Counts the saves into this dir (0: saved before 0.3). A writer whose copy came from an older
    # generation merges its changes onto the current one instead of overwriting it.
    generation: int = 0

    @field_validator("index", mode="before")
    @classmethod
    def _store_config(cls, v):
        return stored_index_config(v) if isinstance(v, dict) else v


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


def verify(path: str | os.PathLike, m: Manifest | None = None, *, checksums: bool = True) -> Manifest:
    """Check every file the manifest names: present, of its recorded size, and (`checksums`) of its
    SHA-256, then the document store's pages (SQLite's quick_check). Raises IndexLoadError naming the
    first file that fails."""
    path = Path(path)
    m = m or read_manifest(path)
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
    if checksums:  # a store can match its checksum and still be damaged inside (written so, or re-hashed)
        DocStore.load_from(path / manifest_version(path, m) / "store.sqlite").quick_check()
    return m


@contextmanager
def writer_lock(path: Path, timeout: float | None):
    """The inter-process lock of an index dir's writers: IndexLockedError after `timeout` seconds (None: wait)."""
    lock = FileLock(str(path / LOCK), timeout=-1 if timeout is None else max(float(timeout), 0.0))
    try:
        lock.acquire()
    except Timeout:
        raise IndexLockedError(
            f"{path} is being saved by another process (it holds {path / LOCK}); gave up after {timeout} s. "
            "Wait for that save to finish, or pass a larger lock_timeout") from None
    try:
        yield
    finally:
        lock.release()


def current_generation(path: Path) -> int | None:
    """The generation the manifest on disk records, or None where there is no readable index."""
    try:
        return read_manifest(path).generation
    except IndexLoadError:
        return None


def write_version(rag, path: Path, generation: int) -> Manifest:
    """Write `rag`'s index, store and embedder as a new version folder of `path`, then swap the
    manifest (the commit point) atomically and remove what is no longer named. Hold the lock."""
    previous = _named_version(path)
    version = f"v-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
    with atomic_dir(path / version, replace=False, remove=_remove_owned) as tmp:
        (tmp / OWNED).write_text(_OWNED_TEXT)  # first, so that cleanup knows the folder is ours
        save_index(rag.index, tmp)
        rag.store.save_to(tmp / "store.sqlite")
        rag.embedder.save_pretrained(tmp / "embedder")
        files, sizes = {}, {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file() and p != tmp / OWNED:
                rel = f"{version}/{p.relative_to(tmp).as_posix()}"
                files[rel], sizes[rel] = sha256_file(p), p.stat().st_size
    n_docs, n_chunks = rag.store.count()
    manifest = Manifest(format_version=FORMAT_VERSION, library_version=library_version(),
                        backbone=rag.backbone.name, backbone_fingerprint=rag.backbone.fingerprint,
                        backbone_dtype=str(rag.backbone.dtype).removeprefix("torch."),
                        embedder_kind=rag.embedder.kind, embedder_dim=rag.embedder.dim,
                        adapter_hash=rag.embedder.fingerprint, index=rag.index_config,
                        chunking=rag.chunk_config, n_documents=n_docs, n_chunks=n_chunks, files=files,
                        sizes=sizes, created_at=datetime.now(timezone.utc).isoformat(),
                        generation=generation)
    atomic_write_json(path / MANIFEST, manifest.model_dump(mode="json"))
    # Only now is the old version garbage; never delete what the manifest on disk names.
    _collect_garbage(path, {version, _named_version(path) or version}, previous)
    return manifest
