"""Grounded answers: the relevance cut and "cannot answer", attributed citations, extractive mode."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedders import Embedder, MeanPoolEmbedder
from embedders.base import RELEVANCE_NAME
from tests.conftest import CORPUS
from unified_rag import InputError, ModelLoadError, UnifiedRAG
from unified_rag.generator import cited_numbers
from unified_rag.grounding import extract, ground, markers, sentence_spans


def test_sentences_keep_their_markers():
    text = "Mars has two moons. [1] They are Phobos and Deimos [2]. Deimos is small [7].\n\nI hope this helps!"
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Mars has two moons. [1]", "They are Phobos and Deimos [2].", "Deimos is small [7].", "I hope this helps!"]


def test_ground_keeps_valid_citations_and_attributes_the_rest():
    sources = np.eye(3, dtype=np.float32)
    nearest_third = lambda ss: np.tile(np.float32([[0, 0, 1]]), (len(ss), 1))  # noqa: E731
    text, cits = ground("Two moons [1]. Deimos is small [7].\n\nThanks!", 3, sources, nearest_third)
    assert text == "Two moons [1]. Deimos is small [3].\n\nThanks [3]!"
    assert [(c.sentence, c.source, c.origin) for c in cits] == [(0, 1, "model"), (1, 3, "attributed"), (2, 3, "attributed")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["Moons", "are", "small", "[1]", "[9]", "[2, 3]", ".", "!", "?", " ", "\n"]), max_size=30),
       st.integers(1, 3))
def test_every_sentence_ends_up_validly_cited(tokens, n):
    text = " ".join(tokens)
    out, cits = ground(text, n, np.eye(n, 4, dtype=np.float32), lambda ss: np.ones((len(ss), 4), np.float32))
    assert all(1 <= m <= n for m in markers(out))  # nothing out of range survives
    spans = sentence_spans(out)
    assert len(spans) == len(sentence_spans(text))
    assert all(cited_numbers(out[a:b], n) for a, b in spans)  # every sentence cites a real source
    assert {c.sentence for c in cits} == set(range(len(spans)))


def test_extract_ranks_source_sentences_by_the_query():
    embed = {"A first.": [1, 0], "A second!": [0.5, 0.5], "B only": [0.9, 0.1]}
    text, cits = extract(np.float32([1, 0]), ["A first. A second!", "B only"],
                         lambda ss: np.float32([embed[s] for s in ss]), max_sentences=2)
    assert text == "A first [1]. B only [2]."
    assert [(c.source, c.origin) for c in cits] == [(1, "extracted"), (2, "extracted")]


def test_no_relevant_source_means_cannot_answer(rag, monkeypatch):
    def never(*a, **k):
        raise AssertionError("the generator must not run without a relevant source")

    monkeypatch.setattr(rag.generator, "generate_ids", never)
    ans = rag.answer("What produces ATP?", k=3, max_new_tokens=5, min_relevance=1.0)
    assert not ans.answerable and ans.sources == [] and ans.text == rag.generator.config.no_answer_text
    stream = rag.stream_answer("What produces ATP?", k=3, max_new_tokens=5, min_relevance=1.0)
    assert "".join(stream) == ans.text and not stream.answer.answerable
    for bad in (1.5, "high", True):
        with pytest.raises(InputError, match="min_relevance"):
            rag.answer("What produces ATP?", min_relevance=bad)


def test_the_cut_keeps_exactly_the_sources_at_or_above_it(rag, monkeypatch):
    monkeypatch.setattr(rag.generator, "generate_ids", lambda ids, n=None, prefix=None: "Something.")
    every = rag.answer(CORPUS[0], k=4, max_new_tokens=5, min_relevance=None, retrieval="dense")
    scores = [h.relevance for h in every.sources]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-5)  # an exact copy
    assert scores == pytest.approx([h.score for h in every.sources], abs=1e-5)  # dense: the cosine itself
    cut = (scores[1] + scores[2]) / 2
    rag.min_relevance = cut  # the instance default, as a calibrated embedder sets it
    kept = rag.answer(CORPUS[0], k=4, max_new_tokens=5, retrieval="dense")
    assert [h.chunk_id for h in kept.sources] == [h.chunk_id for h in every.sources[:2]]
    assert [h.rank for h in kept.sources] == [1, 2]
    sparse = rag.answer(CORPUS[0], k=4, max_new_tokens=5, retrieval="sparse")  # cosines computed for BM25 hits too
    assert all(h.relevance >= cut for h in sparse.sources) and sparse.sources


def test_extractive_mode_quotes_the_best_source_sentence(rag):
    ans = rag.answer(CORPUS[4], k=3, mode="extractive", max_sentences=2, min_relevance=None)
    assert ans.mode == "extractive" and ans.answerable
    first = ans.citations[0]
    assert ans.sources[first.source - 1].doc_id == "d4" and ans.text.startswith(CORPUS[4].rstrip(".") + " [")
    assert ans.cited == cited_numbers(ans.text, len(ans.sources)) and len(ans.citations) == 2
    with pytest.raises(InputError, match="max_sentences"):
        rag.answer(CORPUS[4], mode="extractive", max_sentences=0)


def test_answer_modes_and_the_old_spelling(rag, monkeypatch):
    monkeypatch.setattr(rag.generator, "generate_ids", lambda ids, n=None, prefix=None: "Paris [1].")
    old = rag.answer("capital of France", k=2, max_new_tokens=5, mode="sparse")  # mode once named the retrieval
    new = rag.answer("capital of France", k=2, max_new_tokens=5, retrieval="sparse")
    assert old == new and old.mode == "generative"
    for kw in ({"mode": "poem"}, {"retrieval": "fuzzy"}):
        with pytest.raises(InputError):
            rag.answer("capital of France", **kw)


def test_a_calibrated_cut_travels_with_the_adapter_and_the_index(tiny_backbone, tmp_path):
    emb = MeanPoolEmbedder(tiny_backbone, query_instruction=None)
    emb.relevance_cut = 0.25
    emb.save_pretrained(tmp_path / "emb")
    again = Embedder.from_pretrained(tmp_path / "emb", backbone=tiny_backbone)
    assert again.relevance_cut == 0.25 and again.fingerprint == emb.fingerprint  # not part of the fingerprint
    rag = UnifiedRAG(tiny_backbone, again)
    assert rag.min_relevance == 0.25
    rag.add_texts(CORPUS)
    rag.save(tmp_path / "idx")
    assert UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone).min_relevance == 0.25
    for bad in ({"min_relevance": 2}, {"cut": 0.1}, "not json"):
        (tmp_path / "emb" / RELEVANCE_NAME).write_text(bad if isinstance(bad, str) else json.dumps(bad))
        with pytest.raises(ModelLoadError, match="relevance"):
            Embedder.from_pretrained(tmp_path / "emb", backbone=tiny_backbone)


def test_streaming_follows_the_same_modes(rag):
    ex = rag.stream_answer(CORPUS[4], k=3, mode="extractive", min_relevance=None)
    assert "".join(ex) == ex.answer.text and ex.answer.mode == "extractive"
    assert ex.answer == rag.answer(CORPUS[4], k=3, mode="extractive", min_relevance=None)
    old = rag.stream_answer("capital of France", k=2, max_new_tokens=3, mode="sparse")  # the old spelling
    new = rag.stream_answer("capital of France", k=2, max_new_tokens=3, retrieval="sparse")
    assert [h.chunk_id for h in old.sources] == [h.chunk_id for h in new.sources]
    assert "".join(old) == "".join(new)


@given(st.lists(st.sampled_from(["Paris", " [", "1", "]", "[1]", ", 2", "[3, 4]", ".", " ", "[", "x]", "12"]), max_size=12),
       st.data())
def test_renumbered_stream_is_renumbered_whole_text(parts, data):
    """However the generator's text is cut into pieces, the stream renumbers it as the whole text."""
    from unified_rag.grounding import markers, renumbered, renumbered_stream

    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    assert "".join(renumbered_stream(iter(pieces), 4)) == renumbered(text, 4)
    whole = renumbered(text, 4)
    assert set(markers(whole)) <= {4} and bool(markers(whole)) == bool(markers(text))
