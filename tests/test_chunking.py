import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_rag.chunking import ChunkConfig, chunk_text

words = st.lists(st.sampled_from(["cell", "energy", "the", "Paris", "vector", "ATP", "é", "12", "\n", "  "]),
                 min_size=1, max_size=400)


@settings(max_examples=40, deadline=None)
@given(ws=words, size=st.integers(8, 40), overlap=st.integers(0, 7))
def test_chunks_cover_everything_and_respect_the_budget(tiny_backbone, ws, size, overlap):
    text = " ".join(ws)
    tok = tiny_backbone.tokenizer
    chunks = chunk_text(text, tok, ChunkConfig(chunk_tokens=size, overlap_tokens=overlap))
    covered = [False] * len(text)
    for piece, a, b in chunks:
        assert text[a:b] == piece
        covered[a:b] = [True] * (b - a)
        assert len(tok(piece, add_special_tokens=False)["input_ids"]) <= size + 2  # BPE may re-merge at edges
    assert all(c for c, ch in zip(covered, text) if not ch.isspace())  # nothing silently dropped


def test_long_text_is_split_with_overlap(tiny_backbone):
    text = "The mitochondria is the powerhouse of the cell. " * 30
    chunks = chunk_text(text, tiny_backbone.tokenizer, ChunkConfig(chunk_tokens=32, overlap_tokens=8))
    assert len(chunks) > 3
    assert all(chunks[i + 1][1] < chunks[i][2] for i in range(len(chunks) - 1))  # neighbours overlap


@pytest.mark.parametrize("kw", [dict(chunk_tokens=4), dict(chunk_tokens=32, overlap_tokens=32)])
def test_bad_config(kw):
    with pytest.raises(ValueError):
        ChunkConfig(**kw)
