"""docs/extending.md runs as written: its code blocks register an embedder kind and a vector store,
each one file plus one line, and the pipeline then uses both; adapters load by hub id from the cache."""
import re

import numpy as np
import pytest

from tests.conftest import CORPUS, ROOT
from unified_rag import UnifiedRAG
from unified_rag.registry import _registered


@pytest.fixture
def extended():
    code = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "extending.md").read_text(), re.S)
    assert len(code) == 4
    space: dict = {}
    before = {g: dict(v) for g, v in _registered.items()}
    exec(compile("\n".join(code), "docs/extending.md", "exec"), space)
    yield space
    for g, v in before.items():  # the test's registrations do not leak into other tests
        _registered[g].clear()
        _registered[g].update(v)


def test_a_new_embedder_kind_and_vector_store_from_the_docs(extended, tiny_backbone, tmp_path):
    by_name = UnifiedRAG.from_pretrained(tiny_backbone, embedder="first-last", index={"kind": "numpy"})
    assert type(by_name.embedder).__name__ == "FirstLastEmbedder" and type(by_name.index).__name__ == "NumpyStore"
    # No query instruction: on a random model only an exact copy is reliably nearest.
    emb = extended["FirstLastEmbedder"](tiny_backbone, query_instruction=None)
    rag = UnifiedRAG.from_pretrained(tiny_backbone, embedder=emb, index={"kind": "numpy"})
    rag.add_texts(CORPUS)
    hit = rag.retrieve(CORPUS[3], k=1, mode="dense")[0]
    assert hit.text == CORPUS[3] and hit.score == pytest.approx(1.0, abs=1e-4)
    rag.delete(hit.doc_id)
    assert rag.index.ntotal == len(CORPUS) - 1
    rag.save(tmp_path / "idx")
    assert any(p.name == "index.npz" for p in (tmp_path / "idx").rglob("*"))
    back = UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone, generator_adapter=None)
    assert type(back.index).__name__ == "NumpyStore" and back.index.ntotal == len(CORPUS) - 1
    assert np.array_equal(np.sort(back.index.ids()), np.sort(rag.index.ids()))
    # The embedder's adapter dir records its kind, and loads back through the registry.
    rag.embedder.save_pretrained(tmp_path / "emb")
    assert type(UnifiedRAG.from_pretrained(tiny_backbone, embedder=str(tmp_path / "emb"),
                                           generator_adapter=None).embedder).__name__ == "FirstLastEmbedder"


def test_unknown_kinds_name_the_known_ones(tiny_backbone):
    from unified_rag.errors import InputError, ModelLoadError

    with pytest.raises(ModelLoadError, match="unknown embedder 'nope'.*mean"):
        UnifiedRAG.from_pretrained(tiny_backbone, embedder="nope")
    with pytest.raises(InputError, match="unknown index kind 'nope'.*flat"):
        UnifiedRAG.from_pretrained(tiny_backbone, embedder="mean", index={"kind": "nope"})


def test_adapters_load_by_hub_id_from_the_cache(tiny_backbone, tmp_path, monkeypatch):
    from unified_rag import MeanPoolEmbedder
    from unified_rag.answer_adapter import AnswerAdapter
    from unified_rag.errors import ModelLoadError

    from tests.conftest import make_tiny_backbone

    b = make_tiny_backbone()
    cache = tmp_path / "hub"
    for repo, save in (("someone/emb", lambda d: MeanPoolEmbedder(b).save_pretrained(d)),
                       ("someone/answer", lambda d: AnswerAdapter(b, lora_r=2).save_pretrained(d))):
        folder = cache / f"models--{repo.replace('/', '--')}"
        save(folder / "snapshots" / ("0" * 40))
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    rag = UnifiedRAG.from_pretrained(b, embedder="someone/emb", generator_adapter="someone/answer")
    assert rag.embedder.kind == "mean" and rag.generator.adapter is not None
    with pytest.raises(ModelLoadError, match="someone/other"):
        UnifiedRAG.from_pretrained(b, embedder="someone/other")
