"""Read documents from paths: .txt, .md and .jsonl (a BEIR `corpus.jsonl` too).

Binary and undecodable files are skipped with one warning that lists them; bad JSONL lines are
reported with their line numbers. A missing path is a user mistake and raises.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable

from .errors import InputError
from .types import Document

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
SUFFIXES = TEXT_SUFFIXES | {".jsonl"}


def _files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"path not found: {p}")
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES
                              and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        else:
            out.append(p)
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
        try:
            row = json.loads(line)
            body = row.get("text") or row.get("contents") or ""
            title = row.get("title") or ""
            doc_id = row.get("_id", row.get("id", row.get("docid")))
            meta = {k: v for k, v in row.items() if k not in {"text", "contents", "_id", "id", "docid"}
                    and isinstance(v, (str, int, float, bool))}
            docs.append(Document(text=f"{title}\n{body}" if title and body else (body or title),
                                 id=str(doc_id) if doc_id is not None else f"{path}:{n}",
                                 metadata=meta, source=str(path)))
        except (json.JSONDecodeError, AttributeError, ValueError) as e:
            bad.append(f"{path}:{n} ({type(e).__name__})")
    return docs


def read_documents(paths: Iterable[str | os.PathLike]) -> list[Document]:
    docs: list[Document] = []
    skipped: list[str] = []
    bad_lines: list[str] = []
    for f in _files(paths):
        if f.suffix.lower() not in SUFFIXES:
            skipped.append(f"{f} (unsupported type; use .txt, .md or .jsonl)")
            continue
        text = _decode(f.read_bytes())
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

