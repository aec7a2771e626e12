"""The document store: SQLite (standard library). Chunk text, metadata, source and chunk->document.

It lives in memory while you work; `save_to` writes a consistent copy with SQLite's backup API,
so the on-disk index only ever changes through UnifiedRAG.save's atomic swap.
"""
from __future__ import annotations

import functools
import json
import sqlite3
from pathlib import Path

from .errors import IndexLoadError

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id   TEXT PRIMARY KEY,
    source   TEXT,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id    INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id; never reused after a delete
    doc_id      TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    char_start  INTEGER NOT NULL,
    char_end    INTEGER NOT NULL,
    text        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""


def _typed(method):
    """A store that turns out to be corrupt (a damaged page of a loaded file shows only when a query
    reaches it) raises IndexLoadError naming the file, never a bare sqlite3 error."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as e:
            where = f" {self.origin}" if self.origin else ""
            hint = f"; run `unified-rag verify {Path(self.origin).parent.parent}`" if self.origin else ""
            raise IndexLoadError(f"the document store{where} is corrupt ({e}){hint}, and restore or rebuild "
                                 "the index if it fails") from None
    return wrapper


class DocStore:
    def __init__(self, conn: sqlite3.Connection | None = None, origin: str | None = None):
        self.conn = conn or sqlite3.connect(":memory:", check_same_thread=False)
        self.origin = origin  # the file it was loaded from, for error messages
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.executescript(SCHEMA)

    @_typed
    def add(self, doc_id: str, source: str | None, metadata: dict,
            chunks: list[tuple[str, int, int]]) -> list[int]:
        """Insert one document and its chunks; returns the new chunk ids. Call inside `transaction`."""
        self.conn.execute("INSERT INTO documents(doc_id, source, metadata) VALUES (?, ?, ?)",
                          (doc_id, source, json.dumps(metadata, default=str)))
        ids = []
        for i, (text, a, b) in enumerate(chunks):
            cur = self.conn.execute("INSERT INTO chunks(doc_id, chunk_index, char_start, char_end, text) "
                                    "VALUES (?, ?, ?, ?, ?)", (doc_id, i, a, b, text))
            ids.append(cur.lastrowid)
        return ids

    def transaction(self):
        return self.conn  # sqlite3's connection context manager: commit, or roll back on any exception

    @_typed
    def has(self, doc_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone() is not None

    @_typed
    def unchanged(self, doc_id: str, source: str | None, metadata: dict, chunks: list[tuple[str, int, int]]) -> bool:
        """Whether `doc_id` is stored with exactly this source, metadata and chunking."""
        row = self.conn.execute("SELECT source, metadata FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None or row != (source, json.dumps(metadata, default=str)):
            return False
        stored = self.conn.execute("SELECT text, char_start, char_end FROM chunks WHERE doc_id = ? "
                                   "ORDER BY chunk_index", (doc_id,)).fetchall()
        return stored == [tuple(c) for c in chunks]

    @_typed
    def doc_ids(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT doc_id FROM documents ORDER BY doc_id")]

    @_typed
    def document(self, doc_id: str) -> tuple[str | None, dict, list[tuple[str, int, int]], list[int]]:
        """(source, metadata, chunks as (text, start, end), chunk ids), in chunk order."""
        source, metadata = self.conn.execute("SELECT source, metadata FROM documents WHERE doc_id = ?",
                                             (doc_id,)).fetchone()
        rows = self.conn.execute("SELECT text, char_start, char_end, chunk_id FROM chunks WHERE doc_id = ? "
                                 "ORDER BY chunk_index", (doc_id,)).fetchall()
        return source, json.loads(metadata), [tuple(r[:3]) for r in rows], [r[3] for r in rows]

    @_typed
    def chunk_ids(self, doc_ids: list[str]) -> list[int]:
        q = f"SELECT chunk_id FROM chunks WHERE doc_id IN ({','.join('?' * len(doc_ids))})"
        return [r[0] for r in self.conn.execute(q, doc_ids)] if doc_ids else []

    @_typed
    def delete(self, doc_ids: list[str]) -> None:
        self.conn.executemany("DELETE FROM documents WHERE doc_id = ?", [(d,) for d in doc_ids])

    @_typed
    def chunks(self, chunk_ids: list[int]) -> list[dict]:
        """Rows for the given ids, in the given order."""
        if not chunk_ids:
            return []
        q = ("SELECT c.chunk_id, c.doc_id, c.chunk_index, c.text, d.source, d.metadata FROM chunks c "
             f"JOIN documents d USING(doc_id) WHERE c.chunk_id IN ({','.join('?' * len(chunk_ids))})")
        rows = {r[0]: r for r in self.conn.execute(q, chunk_ids)}
        return [dict(chunk_id=r[0], doc_id=r[1], chunk_index=r[2], text=r[3], source=r[4],
                     metadata=json.loads(r[5])) for i in chunk_ids if (r := rows.get(i))]

    @_typed
    def all_chunk_ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT chunk_id FROM chunks ORDER BY chunk_id")]

    @_typed
    def chunk_texts(self) -> tuple[list[int], list[str]]:
        """Every chunk's id and text, in id order (what the sparse index is built from)."""
        rows = self.conn.execute("SELECT chunk_id, text FROM chunks ORDER BY chunk_id").fetchall()
        return [r[0] for r in rows], [r[1] for r in rows]

    @_typed
    def count(self) -> tuple[int, int]:
        """(documents, chunks)."""
        return (self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0],
                self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    @_typed
    def save_to(self, path: str | Path) -> None:
        dst = sqlite3.connect(path)
        try:
            self.conn.backup(dst)
        finally:
            dst.close()

    def quick_check(self) -> None:
        """SQLite's own consistency check of every page: IndexLoadError naming the file where it fails."""
        try:
            problems = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        if problems != ["ok"]:
            raise IndexLoadError(f"the document store {self.origin or '(in memory)'} is corrupt: {problems[0]}")

    @classmethod
    def load_from(cls, path: str | Path) -> DocStore:
        mem = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                src.backup(mem)
            finally:
                src.close()
            mem.execute("SELECT doc_id, chunk_id FROM chunks LIMIT 1")
        except sqlite3.DatabaseError as e:
            raise IndexLoadError(f"document store {path} is corrupt: {e}") from None
        return cls(mem, origin=str(path))
