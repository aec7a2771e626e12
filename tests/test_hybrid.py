"""Sparse (BM25 over the chunk store) and hybrid (RRF) retrieval: correct, in sync, persisted with the index."""
import pytest

from unified_rag import InputError, UnifiedRAG
from unified_rag.sparse import SparseIndex, reciprocal_rank_fusion


def test_rrf_by_hand():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60)
    assert [i for i, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62) and fused[2][1] == pytest.approx(1 / 62)


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
