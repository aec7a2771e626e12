import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_rag import IndexConfig, InputError, VectorIndex


def _unit(n, d, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_flat_search_is_exact_inner_product(n, k, seed):
    vecs, q = _unit(n, 16, seed), _unit(3, 16, seed + 1)
    ids = np.arange(100, 100 + n)
    idx = VectorIndex(16)
    idx.add(ids, vecs)
    scores, got = idx.search(q, k)
    ref = q @ vecs.T
    kk = min(k, n)
    np.testing.assert_allclose(scores[:, :kk], -np.sort(-ref, axis=1)[:, :kk], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(ref, got[:, :kk] - 100, 1), scores[:, :kk], atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_add_remove_update_by_id(kind):
    vecs = _unit(300, 8)
    idx = VectorIndex(8, IndexConfig(kind=kind, nlist=4, nprobe=4))
    idx.add(np.arange(300), vecs)
    assert idx.search(vecs[7], 1)[1][0, 0] == 7
    idx.remove([7, 8])
    assert idx.ntotal == 298 and 7 not in idx.search(vecs[7], 5)[1][0]
    idx.add(np.array([1000]), vecs[7:8])  # "update": the same vector under a new id
    assert idx.search(vecs[7], 1)[1][0, 0] == 1000


def test_ivf_stays_exact_until_it_holds_enough_vectors_to_train(tmp_path):
    import faiss

    from unified_rag.index import IVF_TRAIN_PER_LIST

    vecs, q = _unit(8 * IVF_TRAIN_PER_LIST, 8), _unit(20, 8, seed=1)
    idx = VectorIndex(8, IndexConfig(kind="ivf", nlist=8, nprobe=8))
    idx.add(np.arange(10), vecs[:10])  # far fewer than 39 per list: no k-means on a handful of points
    assert idx.staging and idx.search(q, 3)[1].shape == (20, 3)
    idx.save(tmp_path / "i.faiss")
    back = VectorIndex.load(tmp_path / "i.faiss", 8, idx.config)
    assert back.staging and sorted(back.ids().tolist()) == list(range(10))
    back.add(np.arange(10, len(vecs)), vecs[10:])  # reaches 39 * nlist: trains on all of them, moves over
    assert not back.staging and isinstance(back.index, faiss.IndexIVF) and back.ntotal == len(vecs)
    assert sorted(back.ids().tolist()) == list(range(len(vecs)))
    assert _recall_at_10(back, q, vecs) == 1.0  # nprobe = nlist: every list, so exact


def test_save_load_round_trip(tmp_path):
    vecs = _unit(50, 8)
    idx = VectorIndex(8)
    idx.add(np.arange(50), vecs)
    idx.save(tmp_path / "i.faiss")
    back = VectorIndex.load(tmp_path / "i.faiss", 8, IndexConfig())
    assert (back.search(vecs[:5], 3)[1] == idx.search(vecs[:5], 3)[1]).all()


def test_wrong_dim_is_rejected():
    with pytest.raises(InputError):
        VectorIndex(8).add(np.arange(2), _unit(2, 9))


def _recall_at_10(idx, q, vecs):
    truth = np.argsort(-(q @ vecs.T), axis=1)[:, :10]
    got = idx.search(q, 10)[1] if not isinstance(idx, tuple) else idx[0].search(q, 10, **idx[1])[1]
    return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])


def test_search_parameters_per_call_trade_speed_for_recall():
    vecs, q = _unit(4000, 32), _unit(100, 32, seed=1)
    hnsw = VectorIndex(32, IndexConfig(kind="hnsw", hnsw_m=4, ef_construction=8, ef_search=1))
    hnsw.add(np.arange(4000), vecs)
    low, high = _recall_at_10(hnsw, q, vecs), _recall_at_10((hnsw, {"ef_search": 400}), q, vecs)
    assert high > low + 0.2, (low, high)  # a wider beam for this call only
    assert hnsw.config.ef_search == 1 and _recall_at_10(hnsw, q, vecs) == low  # the config is untouched
    ivf = VectorIndex(32, IndexConfig(kind="ivf", nlist=64, nprobe=1))
    ivf.add(np.arange(4000), vecs)
    assert _recall_at_10((ivf, {"nprobe": 64}), q, vecs) == 1.0 > _recall_at_10(ivf, q, vecs)  # every list: exact
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InputError, match="ef_search"):
            hnsw.search(q, 10, ef_search=bad)


def test_hnsw_delete_is_a_tombstone_not_a_rebuild(tmp_path):
    from unified_rag.index import HNSW_REBUILD_FRACTION

    vecs = _unit(400, 16)
    idx = VectorIndex(16, IndexConfig(kind="hnsw", hnsw_m=8, ef_search=64))
    idx.add(np.arange(400), vecs)
    graph = idx.index
    idx.remove([3, 4, 999])  # 999 was never added: nothing to mark
    assert idx.index is graph and idx.deleted == {3, 4} and idx.ntotal == 398  # the graph is untouched
    got = idx.search(vecs[3:5], 5)[1]
    assert 3 not in got and 4 not in got and (got >= 0).all()
    assert 3 not in idx.ids() and len(idx.ids()) == 398
    idx.add(np.array([1000]), vecs[3:4])  # a replace: the same vector under a new id
    assert idx.search(vecs[3], 1)[1][0, 0] == 1000
    idx.save(tmp_path / "i.faiss")
    back = VectorIndex.load(tmp_path / "i.faiss", 16, idx.config)
    assert back.deleted == {3, 4} and (back.search(vecs[:20], 5)[1] == idx.search(vecs[:20], 5)[1]).all()
    back.remove(np.arange(10, 10 + int(HNSW_REBUILD_FRACTION * 401) + 1))  # past the threshold: one rebuild
    assert back.index is not graph and not back.deleted and back.ntotal == back.index.ntotal
    assert 12 not in back.search(vecs[12], 5)[1]


def test_hnsw_tombstone_file_is_validated(tmp_path):
    from unified_rag.errors import IndexLoadError

    idx = VectorIndex(8, IndexConfig(kind="hnsw"))
    idx.add(np.arange(50), _unit(50, 8))
    idx.remove([1])
    idx.save(tmp_path / "i.faiss")
    (tmp_path / "i.faiss.deleted.json").write_text('{"not": "a list"}')
    with pytest.raises(IndexLoadError, match="deleted.json"):
        VectorIndex.load(tmp_path / "i.faiss", 8, idx.config)


def test_hnsw_beam_follows_the_index_size_by_default():
    from unified_rag.index import auto_ef_search

    # the measured points (bench index-scale: recall@10 >= 0.95 needs 256 at 100k, 1,024 at 1M)
    assert auto_ef_search(100_000) == 256 and auto_ef_search(1_000_000) == 1024
    assert auto_ef_search(10) == 64 and auto_ef_search(10**9) == 4096
    assert all(auto_ef_search(n) <= auto_ef_search(n * 3) for n in (1, 10**3, 10**5, 10**7))
    vecs, q = _unit(3000, 32), _unit(50, 32, seed=1)
    auto = VectorIndex(32, IndexConfig(kind="hnsw", hnsw_m=4, ef_construction=16))
    auto.add(np.arange(3000), vecs)
    fixed = VectorIndex(32, IndexConfig(kind="hnsw", hnsw_m=4, ef_construction=16, ef_search=1), index=auto.index)
    assert _recall_at_10(auto, q, vecs) == _recall_at_10((fixed, {"ef_search": auto_ef_search(3000)}), q, vecs)


def test_each_store_validates_only_its_own_options():
    from pydantic import ValidationError

    from unified_rag.vectors.faiss_store import FaissConfig
    from unified_rag.vectors.milvus_store import MilvusConfig

    hnsw = IndexConfig(kind="hnsw", hnsw_m=4)
    assert type(hnsw) is FaissConfig and hnsw.hnsw_m == 4 and isinstance(hnsw, IndexConfig)
    assert type(IndexConfig()) is FaissConfig and IndexConfig().kind == "flat"
    assert type(IndexConfig.model_validate({"kind": "milvus"})) is MilvusConfig
    with pytest.raises(ValidationError, match="nlist"):
        IndexConfig(kind="milvus", nlist=4)  # a FAISS option Milvus would ignore
    with pytest.raises(ValidationError, match="uri"):
        IndexConfig(kind="flat", uri="http://host:19530")
    with pytest.raises(ValidationError, match="unknown index kind 'annoy'"):
        IndexConfig(kind="annoy")
    with pytest.raises(ValidationError):
        FaissConfig(kind="milvus")
    assert IndexConfig.model_validate(hnsw.model_dump()) == hnsw


@pytest.mark.parametrize("kind", ["flat", "hnsw", "milvus"])
def test_manifests_of_the_one_class_layout_still_load(kind):
    """Indexes saved before each store had its own config hold every store's options at the top level."""
    from unified_rag.vectors import stored_index_config

    old = dict(kind=kind, nlist=1024, nprobe=16, hnsw_m=8, ef_construction=200, ef_search=None, use_gpu=None,
               milvus_uri=None, milvus_collection="docs")
    cfg = stored_index_config(old)
    assert cfg.kind == kind
    if kind == "milvus":
        assert cfg.collection == "docs" and cfg.uri is None and "nlist" not in cfg.model_dump()
    else:
        assert cfg.hnsw_m == 8 and "milvus_uri" not in cfg.model_dump()


def test_index_help_states_the_store_defaults():
    """`unified-rag index --help` names the FAISS defaults as text (importing the store would load faiss on
    every --help); this keeps that text in step with FaissConfig, their source."""
    import inspect
    import re

    from unified_rag.cli.index import index
    from unified_rag.vectors.faiss_store import FaissConfig

    params = inspect.signature(index).parameters
    for name in ("nlist", "nprobe", "hnsw_m"):
        stated = re.search(r"default (\d+)", params[name].default.help)
        assert stated, f"--{name} help states no default"
        assert int(stated.group(1)) == FaissConfig.model_fields[name].default, name
