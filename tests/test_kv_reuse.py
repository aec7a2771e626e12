"""KV reuse in generation: the system turn's KV, and the query pass of a chat-framed embedder, continue
into generation exactly as a fresh prefill would."""
import copy

import numpy as np
import pytest
import torch

from conftest import CORPUS
from unified_rag import Document, InputError, LastTokenEmbedder, MeanPoolEmbedder, UnifiedRAG
from unified_rag.backbone import cache_kwarg
from unified_rag.generator import Generator, KVPrefix
from unified_rag.types import Hit

QUESTION = "What regulates blood glucose?"


def _hits(n=3):
    return [Hit(rank=i + 1, score=1.0, doc_id=f"d{i}", chunk_id=i, text=t, metadata={}) for i, t in enumerate(CORPUS[:n])]


@torch.inference_mode()
def _logits_fresh_and_reused(backbone, ids, prefix: KVPrefix):
    """Logits over the prompt's remaining positions: one fresh pass of every id, and one pass of the
    remaining ids on a copy of the prefix's cache."""
    model, n = backbone.model, len(prefix.ids)
    fresh = model(input_ids=torch.tensor([ids])).logits[0, n:]
    reused = model(input_ids=torch.tensor([ids[n:]]), **{cache_kwarg(model): copy.deepcopy(prefix.cache)}).logits[0]
    return fresh, reused


def test_system_turn_kv_continues_like_a_fresh_prefill(tiny_backbone):
    gen = Generator(tiny_backbone)
    ids, _ = gen.rag_prompt(QUESTION, _hits(), max_new_tokens=16)
    prefix = gen.system_prefix()
    assert prefix is gen.system_prefix()  # computed once
    assert 0 < len(prefix.ids) < len(ids) and tuple(ids[:len(prefix.ids)]) == prefix.ids
    fresh, reused = _logits_fresh_and_reused(tiny_backbone, ids, prefix)
    torch.testing.assert_close(reused, fresh, rtol=1e-4, atol=1e-5)
    # continuing from it, greedy text equals a plain generate() from scratch
    with torch.inference_mode():
        plain = tiny_backbone.model.generate(**gen._generate_kwargs([ids], 16))
    assert gen.generate_ids(ids, 16, prefix) == tiny_backbone.tokenizer.decode(plain[0, len(ids):], skip_special_tokens=True).strip()


@pytest.mark.parametrize("kind", [LastTokenEmbedder, MeanPoolEmbedder])
def test_chat_framed_query_pass_is_the_prompt_prefill(tiny_backbone, kind):
    emb = kind(tiny_backbone, query_frame="chat")
    vec, prefix = emb.encode_query_with_kv(QUESTION)
    np.testing.assert_allclose(vec, emb.encode_queries([QUESTION])[0], atol=1e-5)  # the same vector retrieval uses
    gen = Generator(tiny_backbone)
    ids, used = gen.rag_prompt(QUESTION, _hits(), max_new_tokens=16, prefix=prefix)
    assert used and tuple(ids[:len(prefix.ids)]) == prefix.ids
    text = tiny_backbone.tokenizer.decode(ids)
    assert text.index("Question: " + QUESTION) < text.index("Sources:") < text.index("[1] ")
    fresh, reused = _logits_fresh_and_reused(tiny_backbone, ids, prefix)
    torch.testing.assert_close(reused, fresh, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        plain = tiny_backbone.model.generate(**gen._generate_kwargs([ids], 16))
    want = tiny_backbone.tokenizer.decode(plain[0, len(ids):], skip_special_tokens=True).strip()
    assert gen.generate_ids(ids, 16, prefix) == want
    assert gen.generate_ids(ids, 16, prefix) == want  # the prefix's cache was copied, not extended


def test_answer_reuses_the_query_pass(tiny_backbone, monkeypatch):
    rag = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone, query_frame="chat"))
    rag.min_relevance = None
    rag.add_documents([Document(text=t, id=f"d{i}") for i, t in enumerate(CORPUS)])
    seen = []
    real = rag.generator.generate_ids
    monkeypatch.setattr(rag.generator, "generate_ids", lambda ids, n=None, prefix=None: seen.append((ids, prefix)) or real(ids, n, prefix))
    for retrieval in ("dense", "hybrid"):
        rag.answer(QUESTION, k=2, max_new_tokens=8, retrieval=retrieval)
        ids, prefix = seen[-1]
        assert prefix is not None and tuple(ids[:len(prefix.ids)]) == prefix.ids
    rag.answer(QUESTION, k=2, max_new_tokens=8, retrieval="sparse")  # no query pass: nothing to reuse
    assert seen[-1][1] is None


def test_instruction_framed_embedders_refuse_kv_reuse(tiny_backbone):
    emb = MeanPoolEmbedder(tiny_backbone)
    assert not emb.reuses_kv
    with pytest.raises(InputError, match="query_frame='chat'"):
        emb.encode_query_with_kv(QUESTION)
    # the option is part of the fingerprint, but leaves the default's unchanged
    assert MeanPoolEmbedder(tiny_backbone, query_frame="chat").fingerprint != emb.fingerprint
    assert "query_frame" not in emb.config_key()
