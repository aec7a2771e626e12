"""Data files for training and fitting: texts and (query, positive[, negative]) pairs, and the seeded
sample.

Formats: .txt (a text a line), .tsv (id<TAB>text, or id<TAB>query<TAB>passage), .jsonl and .jsonl.gz
(objects with text/query, and for pairs query + positive|passage|response|document [+ negative]), and
for pairs a BEIR train dir (corpus.jsonl, queries.jsonl, qrels/train.tsv). A bad line, whatever is
wrong with it (invalid JSON, a missing field, nesting too deep to parse), is reported by number and
skipped; it never fails the read.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import torch

from unified_rag.errors import InputError
from unified_rag.io import json_object, read_lines

TEXT_KEYS = ("text", "query", "contents")
PASSAGE_KEYS = ("positive", "passage", "response", "document")


def _text(obj: dict, keys: Sequence[str]) -> str | None:
    return next((obj[k] for k in keys if isinstance(obj.get(k), str)), None)


def _report(path: Path, bad: list[int]) -> None:
    if bad:
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        warnings.warn(f"{path}: skipped {len(bad)} bad line(s): {shown}", stacklevel=3)


def _ok(row: tuple, optional_last: bool = False) -> bool:
    need = row[:-1] if optional_last else row
    return all(isinstance(x, str) and x.strip() for x in need) and (
        not optional_last or isinstance(row[-1], str))


def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return Path(name).suffix


def _read_rows(path: Path, parse, optional_last: bool = False) -> list[tuple]:
    """`parse(line, n)` -> a row of strings or None; good rows are stripped, bad ones reported once."""
    rows, bad = [], []
    for n, line in enumerate(read_lines(path), 1):
        row = parse(line, n)
        if row is None or not _ok(row, optional_last):
            bad.append(n)
        else:
            rows.append(tuple(x.strip() for x in row))
    _report(path, bad)
    return rows


def _row_id(obj: dict, path: Path, n: int) -> str:
    return str(obj.get("id", obj.get("_id", f"{path.name}:{n}")))


def _read_text_file(path: Path) -> list[tuple[str, str]]:
    kind = _kind(path)
    if kind not in {".txt", ".tsv", ".jsonl"}:
        raise InputError(f"{path}: unsupported data file; use .txt, .tsv or .jsonl (gzipped or not)")

    def parse(line: str, n: int):
        if kind == ".jsonl":
            obj = json_object(line)
            return None if obj is None else (_row_id(obj, path, n), _text(obj, TEXT_KEYS))
        if kind == ".tsv":
            parts = line.split("\t")
            return tuple(parts) if len(parts) == 2 else None
        return (f"{path.name}:{n}", line)

    return _read_rows(path, parse)


def _read_pair_file(path: Path) -> list[tuple[str, str, str, str]]:
    kind = _kind(path)
    if kind not in {".tsv", ".jsonl"}:
        raise InputError(f"{path}: unsupported pairs file; use .jsonl {{query, positive[, negative]}} "
                         "(gzipped or not), .tsv id<TAB>query<TAB>passage, or a BEIR dir with qrels/train.tsv")

    def parse(line: str, n: int):
        if kind == ".jsonl":
            obj = json_object(line)
            negative = obj.get("negative") if obj is not None and obj.get("negative") is not None else ""
            return None if obj is None else (_row_id(obj, path, n), obj.get("query"), _text(obj, PASSAGE_KEYS), negative)
        parts = line.split("\t")
        return (*parts, "") if len(parts) == 3 else None

    return _read_rows(path, parse, optional_last=True)


def _read_beir_train(root: Path) -> list[tuple[str, str, str, str]]:
    """Every judged (query, document) of a BEIR dir's qrels/train.tsv with score > 0."""
    def table(name: str) -> dict[str, str]:
        out = {}
        for line in read_lines(root / name):
            obj = json_object(line)
            if obj is not None and isinstance(obj.get("_id"), str):
                text = " ".join(x for x in (obj.get("title"), obj.get("text")) if isinstance(x, str) and x.strip())
                if text:
                    out[obj["_id"]] = text
        return out

    corpus, queries, rows, bad = table("corpus.jsonl"), table("queries.jsonl"), [], []
    for n, line in enumerate(read_lines(root / "qrels" / "train.tsv"), 1):
        parts = line.split("\t")
        if n == 1 and parts[0] == "query-id":
            continue
        try:
            qid, did, score = parts[0], parts[1], float(parts[2])
        except (IndexError, ValueError):
            bad.append(n)
            continue
        if score > 0 and qid in queries and did in corpus:
            rows.append((f"{qid}:{did}", queries[qid], corpus[did], ""))
        elif score > 0:
            bad.append(n)
    _report(root / "qrels" / "train.tsv", bad)
    return rows


def read_texts(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(id, text) from .txt (one per line), .tsv (id<TAB>text) or .jsonl ({"id", "text"|"query"})."""
    rows = [r for p in paths for r in _read_text_file(Path(p))]
    if not rows:
        raise InputError(f"no usable lines in {[str(p) for p in paths]}")
    return rows


def read_pairs(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str, str, str]]:
    """(id, query, positive, negative) per pair; negative is "" where the file gives none."""
    rows = []
    for p in map(Path, paths):
        if p.is_dir():
            if not (p / "qrels" / "train.tsv").is_file():
                raise InputError(f"{p} is a directory but not a BEIR train dir (no qrels/train.tsv)")
            rows += _read_beir_train(p)
        else:
            rows += _read_pair_file(p)
    if not rows:
        raise InputError(f"no usable pairs in {[str(p) for p in paths]}")
    return rows


def subsample(rows: list, n: int | None, seed: int) -> list:
    """A seeded shuffle, then the first n: any prefix of the result is a fair sample."""
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    return [rows[i] for i in order[: n or len(rows)]]
