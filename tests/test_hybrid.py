"""Sparse (BM25 over the chunk store) and hybrid (z-score fusion) retrieval: correct, in sync, persisted with the index."""
import pytest

from unified_rag import InputError, UnifiedRAG
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from unified_rag.sparse import SparseIndex, hybrid_fusion, tokenize


def test_zscore_fusion_by_hand():
    # dense z: 1 -> +1.2247, 2 -> 0, 3 -> -1.2247; sparse z: 3 -> +1, 1 -> -1; 2 is missing there: just below -1
    fused = dict(hybrid_fusion([(1, 0.9), (2, 0.6), (3, 0.3)], [(3, 12.0), (1, 2.0)], dense_weight=0.5))
    z = np.sqrt(1.5)
    assert fused[1] == pytest.approx(0.5 * z - 0.5) and fused[2] == pytest.approx(-0.5, abs=1e-5) and fused[2] < -0.5
    assert fused[3] == pytest.approx(-0.5 * z + 0.5)


@given(st.lists(st.floats(-1, 1), min_size=1, max_size=20, unique=True),
       st.lists(st.floats(0.1, 50), min_size=0, max_size=20, unique=True))
def test_fusion_ends_are_each_ranking(dense_scores, sparse_scores):
    dense = sorted(enumerate(dense_scores), key=lambda p: -p[1])
    sparse = sorted(((i + 5, s) for i, s in enumerate(sparse_scores)), key=lambda p: -p[1])
    ids = {i for i, _ in dense} | {i for i, _ in sparse}
    assert {i for i, _ in hybrid_fusion(dense, sparse, 0.5)} == ids  # every candidate of either list, once
    # At w = 1 (0) the order starts with the dense (sparse) list's: ids missing there rank below it.
    assert [i for i, _ in hybrid_fusion(dense, sparse, 1.0)][:len(dense)] == [i for i, _ in dense]
    assert [i for i, _ in hybrid_fusion(dense, sparse, 0.0)][:len(sparse)] == [i for i, _ in sparse]


def test_bm25_stems_english():
    stemmed, plain = tokenize(["running runners"]), tokenize(["running runners"], stem=False)
    assert set(stemmed.vocab) == {"run", "runner"} and set(plain.vocab) == {"running", "runners"}


def test_sparse_index_scores_and_drops_non_matches():
    s = SparseIndex()
    s.build([10, 20, 30], ["insulin and glucose", "paris is in france", "glucose glucose glucose"])
    ids, scores = s.search("glucose", 3)
    assert set(ids.tolist()) == {10, 30} and scores[0] >= scores[1] > 0  # chunk 20 has no query term


def test_sparse_and_hybrid_find_the_keyword_document(rag):
    for mode in ("sparse", "hybrid"):
        hits = rag.retrieve("insulin glucose", k=3, mode=mode)
        assert hits[0].doc_id == "d4" and [h.rank for h in hits] == list(range(1, len(hits) + 1))
    with pytest.raises(InputError, match="mode must be"):
        rag.retrieve("insulin", k=3, mode="bm25")


def test_add_and_delete_keep_sparse_in_sync(rag):
    assert rag.retrieve("zeppelin", k=3, mode="sparse") == []
    rag.add_texts(["The zeppelin is a rigid airship."])
    hit = rag.retrieve("zeppelin", k=3, mode="sparse")
    assert len(hit) == 1 and "zeppelin" in hit[0].text
    rag.delete([hit[0].doc_id])
    assert rag.retrieve("zeppelin", k=3, mode="sparse") == []


def test_hybrid_survives_save_and_load(rag, tmp_path, tiny_backbone):
    before = [(h.doc_id, round(h.score, 6)) for h in rag.retrieve("Paris France Seine", k=4, mode="hybrid")]
    rag.save(tmp_path / "idx")
    back = UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone)
    assert [(h.doc_id, round(h.score, 6)) for h in back.retrieve("Paris France Seine", k=4, mode="hybrid")] == before


def test_llama_index_retriever_uses_each_mode(rag):
    from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: F401  (a real llama-index consumer)

    from unified_rag.integrations.llama_index import UnifiedRAGRetriever

    for mode in ("dense", "sparse", "hybrid"):
        nodes = UnifiedRAGRetriever(rag, k=3, mode=mode).retrieve("insulin glucose")
        want = rag.retrieve("insulin glucose", k=3, mode=mode)
        assert [n.node.metadata["doc_id"] for n in nodes] == [h.doc_id for h in want]
        assert [n.score for n in nodes] == [h.score for h in want]
    with pytest.raises(InputError):
        UnifiedRAGRetriever(rag, mode="bm25")
