"""The Milvus backend (embedded Milvus Lite, a real engine): same answers as FAISS flat, and a
UnifiedRAG index that adds, deletes, saves and loads on it like on FAISS."""
import numpy as np
import pytest

from unified_rag import IndexConfig, UnifiedRAG, VectorIndex
from unified_rag.errors import IndexLoadError
from unified_rag.milvus import MilvusIndex


def _unit(n, d, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_search_equals_faiss_flat_after_adds_and_deletes(tmp_path):
    vecs, q = _unit(3000, 32), _unit(25, 32, seed=1)
    ids = np.arange(7, 3007)
    flat, mil = VectorIndex(32), MilvusIndex(32, IndexConfig(kind="milvus"))
    for idx in (flat, mil):
        idx.add(ids, vecs)  # more than one insert page
        idx.remove([7, 100, 2500])
    assert mil.ntotal == flat.ntotal == 2997
    assert np.array_equal(np.sort(mil.ids()), np.sort(flat.ids()))
    (fs, fi), (ms, mi) = flat.search(q, 10), mil.search(q, 10)
    assert np.array_equal(fi, mi)
    np.testing.assert_allclose(ms, fs, atol=1e-5)
    np.testing.assert_allclose(mil.vectors([8, 9]), vecs[1:3], atol=1e-6)
    assert mil.vectors([7]) is None  # deleted
    mil.save(tmp_path)
    back = MilvusIndex.load(tmp_path, 32, mil.config)
    assert np.array_equal(back.search(q, 10)[1], fi)
    back.add(np.array([5000]), vecs[:1])  # the loaded copy is a working copy: the saved one is untouched
    assert MilvusIndex.load(tmp_path, 32, mil.config).ntotal == 2997 and back.ntotal == 2998
    with pytest.raises(IndexLoadError, match="dim 16"):
        MilvusIndex.load(tmp_path, 16, mil.config)


def test_unified_rag_on_milvus_round_trips(tiny_backbone, tmp_path):
    from unified_rag import Document, MeanPoolEmbedder

    from tests.conftest import CORPUS

    emb = MeanPoolEmbedder(tiny_backbone, query_instruction=None)
    r = UnifiedRAG(tiny_backbone, emb, index={"kind": "milvus"}, chunking={"chunk_tokens": 48, "overlap_tokens": 8})
    r.add_documents([Document(text=t, id=f"d{i}") for i, t in enumerate(CORPUS)])
    ref = UnifiedRAG(tiny_backbone, emb, chunking={"chunk_tokens": 48, "overlap_tokens": 8})
    ref.add_documents([Document(text=t, id=f"d{i}") for i, t in enumerate(CORPUS)])
    r.delete(["d1"])
    ref.delete(["d1"])
    hits = [(h.doc_id, h.chunk_index) for h in r.retrieve(CORPUS[2], k=3)]
    assert hits == [(h.doc_id, h.chunk_index) for h in ref.retrieve(CORPUS[2], k=3)] and hits[0][0] == "d2"
    r.save(tmp_path / "idx")
    back = UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone, embedder=emb)
    assert isinstance(back.index, MilvusIndex) and back.index.ntotal == r.index.ntotal
    assert [(h.doc_id, h.chunk_index) for h in back.retrieve(CORPUS[2], k=3)] == hits
