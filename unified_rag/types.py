"""Public data types: what goes in (Document) and what comes out (Hit, Answer)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator


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


class Answer(BaseModel):
    text: str
    sources: list[Hit]  # sources[i] is cited as [i + 1]
    cited: list[int] = Field(default_factory=list)  # the numbers the text actually cites

    def __str__(self) -> str:
        refs = "\n".join(f"[{h.rank}] {h.doc_id} ({h.source or 'inline'})" for h in self.sources)
        return f"{self.text}\n\nSources:\n{refs}"
