"""Token-aware chunking with overlap, on the backbone's own tokenizer. Long documents are split,
never truncated: every character of a document lands in at least one chunk."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class ChunkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_tokens: int = 256
    overlap_tokens: int = 32

    @model_validator(mode="after")
    def _check(self):
        if self.chunk_tokens < 8:
            raise ValueError("chunk_tokens must be >= 8")
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ValueError("overlap_tokens must be >= 0 and smaller than chunk_tokens")
        return self


def chunk_text(text: str, tokenizer, config: ChunkConfig) -> list[tuple[str, int, int]]:
    """(chunk text, char start, char end) windows of at most `chunk_tokens` tokens."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    n = len(offsets)
    if n <= config.chunk_tokens:
        return [(text, 0, len(text))]
    step = config.chunk_tokens - config.overlap_tokens
    chunks = []
    for start in range(0, n, step):
        end = min(start + config.chunk_tokens, n)
        # The first chunk starts at 0 and the last ends at len(text), so no edge text is lost.
        a = 0 if start == 0 else offsets[start][0]
        b = len(text) if end == n else offsets[end - 1][1]
        if text[a:b].strip():
            chunks.append((text[a:b], a, b))
        if end == n:
            break
    return chunks
