"""Read documents from paths: .txt, .md and .jsonl (a BEIR `corpus.jsonl` too).

Binary and undecodable files, non-regular files (FIFOs, devices: refused before they are opened,
so a named pipe never blocks) and files the OS will not read are skipped with one warning that lists
them. A JSONL line that cannot be parsed, for any reason, is one reported line, never a failed add.
A missing path is a user mistake and raises.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from .errors import InputError
from .io import json_object, text_hash
from .types import Document, check_texts

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
SUFFIXES = TEXT_SUFFIXES | {".jsonl"}


def _kind(p: Path) -> str:
    """'dir', 'file', 'missing' or 'other' (FIFO, socket, device), from one stat that never opens it."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as e:  # a name too long, a loop of links, no permission
        if e.errno in (errno.ENAMETOOLONG, errno.ENOTDIR):
            return "missing"
        raise InputError(f"cannot read {str(p)[:200]}: {e.strerror}") from None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _files(paths: Iterable[str | os.PathLike], skipped: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        kind = _kind(p)
        if kind == "missing":
            raise InputError(f"path not found: {str(p)[:200]}")
        if kind == "other":
            skipped.append(f"{p} (not a regular file)")
        elif kind == "file":
            out.append(p)
        else:
            try:
                found = sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES
                               and not any(part.startswith(".") for part in f.relative_to(p).parts))
            except OSError as e:
                skipped.append(f"{p} (cannot list: {e.strerror})")
                continue
            for f in found:
                k = _kind(f) if f.exists() else "missing"
                if k == "file":
                    out.append(f)
                elif k == "other":
                    skipped.append(f"{f} (not a regular file)")
    return out


def _decode(raw: bytes) -> str | None:
    if b"\x00" in raw[:8192]:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _jsonl_documents(path: Path, text: str, bad: list[str]) -> list[Document]:
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json_object(line)
        if row is None:
            bad.append(f"{path}:{n} (not a JSON object)")
            continue
        try:
            body = row.get("text") or row.get("contents") or ""
            title = row.get("title") or ""
            doc_id = row.get("_id", row.get("id", row.get("docid")))
            meta = {k: v for k, v in row.items() if k not in {"text", "contents", "_id", "id", "docid"}
                    and isinstance(v, (str, int, float, bool))}
            docs.append(Document(text=f"{title}\n{body}" if title and body else (body or title),
                                 id=str(doc_id) if doc_id is not None else f"{path}:{n}",
                                 metadata=meta, source=str(path)))
        except (ValueError, AttributeError, TypeError, RecursionError) as e:  # any unparseable line
            bad.append(f"{path}:{n} ({type(e).__name__})")
    return docs


def read_documents(paths: Iterable[str | os.PathLike]) -> list[Document]:
    docs: list[Document] = []
    skipped: list[str] = []
    bad_lines: list[str] = []
    for f in _files(paths, skipped):
        if f.suffix.lower() not in SUFFIXES:
            skipped.append(f"{f} (unsupported type; use .txt, .md or .jsonl)")
            continue
        try:
            text = _decode(f.read_bytes())
        except OSError as e:
            skipped.append(f"{f} (cannot read: {e.strerror})")
            continue
        if text is None:
            skipped.append(f"{f} (binary or not UTF-8)")
        elif not text.strip():
            skipped.append(f"{f} (empty)")
        elif f.suffix.lower() == ".jsonl":
            docs.extend(_jsonl_documents(f, text, bad_lines))
        else:
            docs.append(Document(text=text, id=str(f), source=str(f), metadata={"filename": f.name}))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} file(s): " + "; ".join(skipped), stacklevel=2)
    if bad_lines:
        warnings.warn(f"skipped {len(bad_lines)} bad JSONL line(s): " + "; ".join(bad_lines[:20])
                      + (" ..." if len(bad_lines) > 20 else ""), stacklevel=2)
    return docs


# --- what add_documents() and add_texts() accept -------------------------------------------------
def names_a_path(s: str) -> bool:
    """A one-line string that names an existing file or folder (a name too long to exist names none)."""
    if "\n" in s or len(s) > 4096:
        return False
    try:
        return os.path.exists(s)
    except (OSError, ValueError):
        return False


def as_list(items: Any, what: str) -> list:
    """One item or an iterable of them, as a list; None and non-iterables are typed errors."""
    if items is None:
        raise InputError(f"{what} got None; pass a list")
    if isinstance(items, (str, bytes, os.PathLike, Document, dict)):
        return [items]
    try:
        return list(items)
    except TypeError:
        raise InputError(f"{what} needs a list, got {type(items).__name__}") from None

def as_documents(items: Iterable[Any]) -> list[Document]:
    """What add_documents() takes (Documents, dicts, paths, folders) as Documents, each with an id."""
    docs, paths = [], []
    for it in as_list(items, "add_documents()"):
        if isinstance(it, Document):
            docs.append(it)
        elif isinstance(it, dict):
            try:
                docs.append(Document.model_validate(it))
            except ValidationError as e:
                raise InputError(f"bad document {str(it)[:80]!r}: {e.errors()[0]['msg']}") from None
        elif isinstance(it, os.PathLike) or (isinstance(it, str) and names_a_path(it)):
            paths.append(it)
        elif isinstance(it, str):
            warnings.warn("add_documents() with plain strings that name no file is deprecated: "
                          "they are indexed as texts for now; use add_texts() for texts",
                          DeprecationWarning, stacklevel=3)
            docs.extend(texts_as_documents([it]))
        else:
            raise InputError(f"cannot index an object of type {type(it).__name__}; pass paths or "
                             "Documents to add_documents(), strings to add_texts()")
    if paths:
        docs.extend(read_documents(paths))
    for d in docs:  # raw strings get a content hash as id, so re-adding the same text replaces it
        if d.id is None:
            d.id = text_hash(d.text)
    return docs

def texts_as_documents(texts: list, metadata: list[dict] | None = None) -> list[Document]:
    check_texts(texts, "add_texts() texts")
    metadata = metadata if metadata is not None else [{}] * len(texts)
    if len(metadata) != len(texts):
        raise InputError(f"add_texts() got {len(texts)} texts but {len(metadata)} metadata dicts")
    return [Document(text=t, metadata=m) for t, m in zip(texts, metadata)]
