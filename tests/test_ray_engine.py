"""Corpus encoding on Ray Data, on a local Ray with 2 CPUs: the index equals the one-process index
(the same chunk ids, vectors within float tolerance) and saves and loads like any other."""
import numpy as np
import pytest

from tests.conftest import CORPUS, need_module

ray = need_module("ray")
# Ray warns when an actor pool gets fewer input blocks than actors: then only one actor works.
pytestmark = pytest.mark.filterwarnings("error:The minimum number of concurrent actors")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_index_equals_single_process_index(local_ray, tiny_backbone, tmp_path):
    from unified_rag import Backbone, Document, MeanPoolEmbedder, UnifiedRAG
    from unified_rag.ray_engine import add_documents_ray

    tiny_backbone.save_pretrained(tmp_path / "model")  # what every worker loads: a path all can read
    backbone = Backbone.from_pretrained(tmp_path / "model", dtype="fp32")
    docs = [Document(text=" ".join(CORPUS[i:] + CORPUS[:i]) * 2, id=f"d{i}", metadata={"i": i})
            for i in range(len(CORPUS))] + [Document(text=t, id=f"s{i}") for i, t in enumerate(CORPUS)]

    def fresh():
        return UnifiedRAG(backbone, MeanPoolEmbedder(backbone, query_instruction=None),
                          chunking={"chunk_tokens": 32, "overlap_tokens": 4})

    one, dist = fresh(), fresh()
    one.add_documents(docs, batch_size=4)
    ids = add_documents_ray(dist, docs, model=tmp_path / "model", actors=2, batch_size=4, show_progress_bar=False)
    assert ids == [d.id for d in docs]
    a, b = one.store.all_chunk_ids(), dist.store.all_chunk_ids()
    assert a == b and len(a) > len(docs)  # long documents were split into several chunks
    assert [r["text"] for r in one.store.chunks(a)] == [r["text"] for r in dist.store.chunks(b)]
    np.testing.assert_allclose(dist.index.vectors(b), one.index.vectors(a), atol=1e-4)
    dist.save(tmp_path / "idx")
    back = UnifiedRAG.load(tmp_path / "idx", model=backbone, embedder=dist.embedder)
    assert [h.chunk_id for h in back.retrieve(CORPUS[3], k=3)] == [h.chunk_id for h in one.retrieve(CORPUS[3], k=3)]


def test_ray_engine_rejects_bad_input(local_ray, rag):
    from unified_rag.errors import InputError
    from unified_rag.ray_engine import add_documents_ray

    with pytest.raises(InputError, match="actors"):
        add_documents_ray(rag, ["some text"], actors=0)
