"""The MTEB adapter against mteb's own interfaces, offline: no task data is downloaded."""
import numpy as np
import pytest

from tests.conftest import need_module

mteb = need_module("mteb")


@pytest.fixture(scope="module")
def adapter(tiny_backbone):
    from benchmarks.mteb_adapter import MTEBEncoder
    from embedders import MeanPoolEmbedder

    emb = MeanPoolEmbedder(tiny_backbone)
    return MTEBEncoder(emb, prompts={"SciFact-query": "Find evidence for this claim", "document": "Passage"})


def test_protocol_and_meta(adapter):
    from mteb.models import EncoderProtocol, ModelMeta

    assert isinstance(adapter, EncoderProtocol)
    assert isinstance(adapter.mteb_model_meta, ModelMeta) and adapter.mteb_model_meta.embed_dim == 64


def test_encode_through_mteb_dataloaders(adapter):
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    task = mteb.get_task("SciFact").metadata  # metadata ships with mteb; nothing is fetched
    assert adapter.instruction_for(task, PromptType.query) == "Find evidence for this claim"
    assert adapter.instruction_for(task, PromptType.document) == "Passage"
    queries = Dataset.from_dict({"id": ["q1", "q2"], "text": ["vitamin d and bones", "paris capital"]})
    corpus = Dataset.from_dict({"id": ["d1", "d2", "d3"], "title": ["Bones", "", "Cities"],
                                "text": ["Vitamin D helps bone density.", "Unrelated text.", "Paris is in France."]})
    kw = dict(task_metadata=task, hf_split="test", hf_subset="default")
    q = adapter.encode(create_dataloader(queries, task_metadata=task, prompt_type=PromptType.query, batch_size=1),
                       prompt_type=PromptType.query, **kw)
    d = adapter.encode(create_dataloader(corpus, task_metadata=task, prompt_type=PromptType.document, batch_size=2),
                       prompt_type=PromptType.document, **kw)
    assert q.shape == (2, 64) and d.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, rtol=1e-5)
    sim = np.asarray(adapter.similarity(q, d))
    assert sim.shape == (2, 3)
    np.testing.assert_allclose(sim, q @ d.T, rtol=1e-4, atol=1e-5)
    # the prompt reaches the embedder: the same text encodes differently as query and as document
    same = Dataset.from_dict({"id": ["x"], "text": ["vitamin d and bones"]})
    as_doc = adapter.encode(create_dataloader(same, task_metadata=task, prompt_type=PromptType.document),
                            prompt_type=PromptType.document, **kw)
    assert not np.allclose(as_doc[0], q[0])
