"""Public data types: what goes in (Document) and what comes out (Hit, Answer)."""
from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator

DECLINE_TEXT = "I cannot answer this from the sources."  # what the answer adapter is trained to say

RetrievalMode = Literal["dense", "sparse", "hybrid"]
RETRIEVAL_MODES: tuple[str, ...] = get_args(RetrievalMode)
AnswerMode = Literal["generative", "extractive"]
ANSWER_MODES: tuple[str, ...] = get_args(AnswerMode)


def has_lone_surrogate(text: str) -> bool:
    """True when `text` cannot be written as UTF-8 (a lone surrogate, e.g. from a broken JSON escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_texts(texts: list, what: str = "texts") -> None:
    """Every item a non-blank, UTF-8-encodable str; an InputError naming the positions otherwise."""
    from .errors import InputError

    kinds = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if kinds:
        raise InputError(f"{what} at positions {kinds[:10]} are not strings "
                         f"(got {type(texts[kinds[0]]).__name__})")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise InputError(f"{what} at positions {blank[:10]} are empty or whitespace-only")
    broken = [i for i, t in enumerate(texts) if has_lone_surrogate(t)]
    if broken:
        raise InputError(f"{what} at positions {broken[:10]} hold a lone surrogate (invalid Unicode); "
                         "decode the source as UTF-8 with errors='replace' first")


def check_positive_int(value: Any, name: str) -> None:
    """An InputError unless `value` is an int >= 1 (bools are not counts)."""
    from .errors import InputError

    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


class Document(BaseModel):
    text: str
    id: str | None = None  # derived from the source or a counter when absent
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("document text is empty or whitespace-only")
        if has_lone_surrogate(v):
            raise ValueError("document text holds a lone surrogate (invalid Unicode)")
        return v


class Hit(BaseModel):
    rank: int
    score: float
    text: str
    doc_id: str
    chunk_id: int
    chunk_index: int = 0
    source: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    relevance: float | None = None  # cosine of query and chunk by the shared embedder, when the answer path computed it


class Citation(BaseModel):
    """Answer sentence `sentence` (0-based) is backed by source number `source` (1-based, as in the text)."""
    sentence: int
    source: int
    origin: Literal["model", "attributed", "extracted"]  # the generator wrote it / embeddings added it / extractive


class Answer(BaseModel):
    text: str
    sources: list[Hit]  # sources[i] is cited as [i + 1]
    cited: list[int] = Field(default_factory=list)  # the numbers the text actually cites
    citations: list[Citation] = Field(default_factory=list)
    answerable: bool = True  # False: no source passed the relevance cut, or the answer adapter declined; `text` says so
    mode: Literal["generative", "extractive"] = "generative"

    def __str__(self) -> str:
        refs = "\n".join(f"[{h.rank}] {h.doc_id} ({h.source or 'inline'})" for h in self.sources)
        return f"{self.text}\n\nSources:\n{refs}"
