"""Plug-in points, so that the core never imports the packages built on it.

    group          what registers there                              example
    embedders      embedder kinds (Embedder subclasses)              "llm2vec" -> embedders.llm2vec:LLM2VecEmbedder
    vector_stores  vector index kinds (unified_rag.vectors)           "milvus" -> unified_rag.vectors.milvus_store:MilvusIndex
    cli            `unified-rag` command groups (typer apps)         "train" -> trainers.cli:app

Each group is read from the Python entry points `unified_rag.<group>` that installed packages declare
(this project's in pyproject.toml), and from `register()` calls made in the running process (a
notebook, a test, a plug-in's own __init__): one line adds a kind. Entries load on first use.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

GROUPS = ("embedders", "vector_stores", "cli")
_registered: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}


def _check(group: str) -> None:
    if group not in GROUPS:
        raise KeyError(f"unknown registry group {group!r}: one of {', '.join(GROUPS)}")


@lru_cache(maxsize=None)
def _entry_points(group: str) -> dict:
    return {ep.name: ep for ep in entry_points(group=f"unified_rag.{group}")}


def register(group: str, name: str, obj: Any) -> Any:
    """Make `obj` the entry `name` of `group` in this process (it takes precedence over entry points)."""
    _check(group)
    _registered[group][name] = obj
    return obj


def names(group: str) -> list[str]:
    _check(group)
    return sorted(set(_entry_points(group)) | set(_registered[group]))


def lookup(group: str, name: str) -> Any | None:
    """The entry, loaded, or None."""
    _check(group)
    if name in _registered[group]:
        return _registered[group][name]
    ep = _entry_points(group).get(name)
    if ep is None:
        return None
    obj = ep.load()
    _registered[group][name] = obj
    return obj
