"""Adapters in the shared model are scoped: building or using one embedder never changes another's
output or the generator's logits. LoRA B starts at zero (a no-op adapter), so it is filled with small
random values here: every adapter really changes what it touches."""
import numpy as np
import pytest
import torch

from embedders import MeanPoolEmbedder
from unified_rag import lora as adapters
from embedders.birecon import BiReconEmbedder
from embedders.gem import GEMEmbedder
from embedders.llm2vec import LLM2VecEmbedder
from tests.conftest import CORPUS
from unified_rag.generator import Generator

pytestmark = pytest.mark.usefixtures("one_thread")

PROBE = torch.tensor([[5, 6, 7, 8, 9]])
LORA = dict(lora_r=4, lora_alpha=8, lora_dropout=0.0)


def _nonzero_b(emb, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in emb.lora_parameters().items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return emb


def _logits(b):
    with torch.no_grad():
        return b.model(input_ids=PROBE).logits


def test_building_or_using_one_embedder_never_changes_another(fresh_tiny_backbone):
    b = fresh_tiny_backbone
    mean = MeanPoolEmbedder(b)
    mean_out, logits = mean.encode(CORPUS), _logits(b)
    answer = Generator(b).complete("Paris is", max_new_tokens=4)
    builders = [lambda: GEMEmbedder(b, **LORA), lambda: LLM2VecEmbedder(b, **LORA),
                lambda: BiReconEmbedder(b, **LORA), lambda: GEMEmbedder(b, **LORA)]  # two GEMs: two adapters
    built, outs = [], []
    for seed, build in enumerate(builders):
        e = _nonzero_b(build(), seed)
        outs.append(e.encode(CORPUS))
        built.append(e)
        assert np.array_equal(mean.encode(CORPUS), mean_out) and torch.equal(_logits(b), logits), e.adapter_name
        for other, out in zip(built, outs):  # every earlier LoRA embedder, after this one was built and used
            assert np.array_equal(other.encode(CORPUS), out), (e.adapter_name, other.adapter_name)
    assert len({e.adapter_name for e in built}) == len(built)
    assert Generator(b).complete("Paris is", max_new_tokens=4) == answer
    for e in built:  # each adapter really changes the model while it is on, and only then
        with e.adapter_active():
            assert not torch.allclose(_logits(b), logits), e.adapter_name
        assert torch.equal(_logits(b), logits)


def test_gem_generation_context_is_scoped(fresh_tiny_backbone):
    b = fresh_tiny_backbone
    logits = _logits(b)
    gem = _nonzero_b(GEMEmbedder(b, **LORA), 0)
    llm2vec = _nonzero_b(LLM2VecEmbedder(b, **LORA), 1)
    ref = llm2vec.encode(CORPUS)
    assert torch.equal(_logits(b), logits)  # generate_with_adapter leaves nothing switched on
    with gem.generation():
        on = _logits(b)
        assert np.array_equal(llm2vec.encode(CORPUS), ref)  # another embedder inside it: unaffected
        assert torch.equal(_logits(b), on)  # ... and the GEM adapter is on again after it
    assert not torch.allclose(on, logits)  # generation really used the GEM weights
    assert torch.equal(_logits(b), logits)  # and is off again after
    off = GEMEmbedder(b, generate_with_adapter=False, **LORA)
    with off.generation():
        assert torch.equal(_logits(b), logits)


def test_building_an_embedder_keeps_requires_grad(fresh_tiny_backbone):
    b = fresh_tiny_backbone
    gem = GEMEmbedder(b, **LORA)
    for p in gem.lora_parameters().values():
        p.requires_grad_(True)  # a trainer opted in
    LLM2VecEmbedder(b, **LORA)
    with gem.adapter_active():
        pass
    assert all(p.requires_grad for p in gem.lora_parameters().values())
    assert not any(p.requires_grad for n, p in b.model.named_parameters() if ".gem." not in n)


@pytest.mark.parametrize("with_adapter", [True, False])
def test_unified_rag_generates_with_gem_only_when_asked(fresh_tiny_backbone, with_adapter):
    from unified_rag import UnifiedRAG

    b = fresh_tiny_backbone
    plain = UnifiedRAG(b, MeanPoolEmbedder(b))
    plain.add_texts(CORPUS)
    base = plain.answer("What produces ATP?", k=2, max_new_tokens=8).text
    gem = _nonzero_b(GEMEmbedder(b, generate_with_adapter=with_adapter, **LORA), 3)
    with torch.no_grad():
        gem.special_embeddings.copy_(gem.special_embeddings * 0)  # irrelevant to generation; keeps it deterministic
    rag = UnifiedRAG(b, gem)
    rag.add_texts(CORPUS)
    ids, _ = rag.generator.rag_prompt("What produces ATP?", rag.retrieve("What produces ATP?", k=2), 8)
    with torch.no_grad():
        on = b.model(input_ids=torch.tensor([ids])).logits
    with torch.no_grad(), rag.generator.weights():
        inside = b.model(input_ids=torch.tensor([ids])).logits
    assert torch.equal(on, inside) != with_adapter  # the generator's weights are GEM's exactly when asked
    streamed = "".join(rag.stream_answer("What produces ATP?", k=2, max_new_tokens=8))
    assert streamed.strip() == rag.answer("What produces ATP?", k=2, max_new_tokens=8).text
    assert plain.answer("What produces ATP?", k=2, max_new_tokens=8).text == base  # the other pipeline is untouched


def test_merged_inference_matches_peft_and_never_writes_the_base(fresh_tiny_backbone, monkeypatch):
    b = fresh_tiny_backbone
    e = _nonzero_b(LLM2VecEmbedder(b, **LORA), 0)
    weights = {n: p.detach().clone() for n, p in b.model.named_parameters()}
    merges = []
    addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: merges.append(1) or addmm(*a, **k))
    long_rows = [" ".join(CORPUS)] * 4  # more tokens than the tiny model's 64 features: the merged path
    merged = e.encode(long_rows)
    assert merges, "the merged path never ran"
    n_merges = len(merges)
    e.encode("Paris")  # one short query has fewer tokens than features: peft's own path, nothing merged
    assert len(merges) == n_merges
    monkeypatch.setattr(adapters, "MERGE_AT_INFERENCE", False)
    plain = e.encode(long_rows)
    assert len(merges) == n_merges
    np.testing.assert_allclose(merged, plain, atol=1e-5)
    assert all(torch.equal(p, weights[n]) for n, p in b.model.named_parameters())
    assert "forward" not in vars(next(m for m in b.model.modules() if hasattr(m, "lora_A")))  # unpatched after
    monkeypatch.setattr(adapters, "MERGE_AT_INFERENCE", True)
    other, no_lora = _nonzero_b(LLM2VecEmbedder(b, **LORA), 1), LLM2VecEmbedder(b, lora_r=0)
    for inner in (other, no_lora):  # a scope opened inside this one's sees its own adapter, or none
        with e.adapter_active():
            nested = inner.encode(long_rows)
        np.testing.assert_allclose(nested, inner.encode(long_rows), atol=1e-5)
