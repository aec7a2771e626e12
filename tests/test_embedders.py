import numpy as np
import pytest
import torch

from embedders.adapters import splice_specials
from tests.conftest import CORPUS
from unified_rag import (Embedder, InputError, LastTokenEmbedder, LLM2VecGenEmbedder, MeanPoolEmbedder,
                         load_embedder)

TEXTS = CORPUS + ["short", "a much longer text " * 12]
KINDS = [MeanPoolEmbedder, LastTokenEmbedder, LLM2VecGenEmbedder]


@pytest.mark.parametrize("cls", KINDS)
def test_encode_shape_dtype_norm(tiny_backbone, cls):
    e = cls(tiny_backbone)
    v = e.encode(TEXTS)
    assert v.shape == (len(TEXTS), e.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert e.encode(TEXTS[0]).shape == (e.dim,)
    assert not np.allclose(v[0], v[1])


@pytest.mark.parametrize("cls", KINDS)
def test_batch_size_and_padding_side_do_not_change_results(tiny_backbone, cls):
    e = cls(tiny_backbone)
    ref = e.encode(TEXTS, batch_size=1, instruction="Given a question, retrieve passages that answer it")
    for side in ("right", "left"):
        e.padding_side = side
        for bs in (3, 32):
            got = e.encode(TEXTS, batch_size=bs, instruction="Given a question, retrieve passages that answer it")
            np.testing.assert_allclose(got, ref, atol=2e-5)


def test_instruction_tokens_are_not_pooled(tiny_backbone):
    e = MeanPoolEmbedder(tiny_backbone)
    items = e.tokenize(["hello world"], "an instruction")
    batch = e.collate(items)
    ids, n_head, n_text = items[0]
    assert batch["text_mask"][0].sum() == n_text and n_head > 0
    assert batch["text_mask"][0, :n_head].sum() == 0


def test_truncation_warns_and_never_cuts_special_tokens(tiny_backbone):
    e = LLM2VecGenEmbedder(tiny_backbone, max_length=40, num_special_tokens=4)
    with pytest.warns(UserWarning, match="truncated"):
        items = e.tokenize(["word " * 200], None)
    batch = e.collate(items)
    assert batch["attention_mask"].sum() == 40
    assert batch["special_mask"][0, -4:].all() and batch["special_mask"].sum() == 4
    head, tail = e.frame(None)
    assert items[0][0][-len(tail):] == tail  # the chat frame's tail survives too


@pytest.mark.parametrize("bad", [[], [""], ["ok", "   "], [None]])
def test_bad_texts_raise_typed_error(tiny_backbone, bad):
    with pytest.raises(InputError):
        MeanPoolEmbedder(tiny_backbone).encode(bad)


def test_standardization_fit_save_load(tiny_backbone, tmp_path):
    e = MeanPoolEmbedder(tiny_backbone).fit_standardization(CORPUS * 2)
    raw = e.encode(CORPUS, normalize=False)
    np.testing.assert_allclose(raw.mean(0), 0, atol=1e-4)  # the fit texts standardise to mean 0
    e.save_pretrained(tmp_path / "std")
    assert sorted(p.name for p in (tmp_path / "std").iterdir()) == ["adapter.safetensors", "embedder_config.json"]
    back = Embedder.from_pretrained(tmp_path / "std", backbone=tiny_backbone)
    assert isinstance(back, MeanPoolEmbedder) and back.standardized
    np.testing.assert_array_equal(back.encode(CORPUS), e.encode(CORPUS))
    assert back.fingerprint == e.fingerprint != MeanPoolEmbedder(tiny_backbone).fingerprint


@pytest.mark.parametrize("cls", [MeanPoolEmbedder, LastTokenEmbedder])
def test_pooling_layers(tiny_backbone, tmp_path, cls):
    n = tiny_backbone.model.config.num_hidden_layers
    last, default = cls(tiny_backbone, layers=[n]), cls(tiny_backbone)
    np.testing.assert_allclose(last.encode(TEXTS), default.encode(TEXTS), atol=1e-6)  # layer n is the default
    assert last.fingerprint != default.fingerprint and '"layers"' not in default.config_key()
    early = cls(tiny_backbone, layers=[1])
    assert not np.allclose(early.encode(TEXTS), default.encode(TEXTS), atol=1e-3)
    both = cls(tiny_backbone, layers=[1, n]).fit_standardization(CORPUS * 2)
    v = both.encode(TEXTS)
    assert both.dim == 2 * tiny_backbone.hidden_size and v.shape == (len(TEXTS), both.dim)
    both.save_pretrained(tmp_path / "both")
    back = Embedder.from_pretrained(tmp_path / "both", backbone=tiny_backbone)
    assert back.config.layers == [1, n] and back.fingerprint == both.fingerprint
    np.testing.assert_array_equal(back.encode(TEXTS), v)
    for bad in ([], [n + 1], [-1], [1, 1]):
        with pytest.raises(InputError, match="layers must be distinct indices"):
            cls(tiny_backbone, layers=bad)


def test_llm2vec_gen_untrained_is_identity_and_round_trips(tiny_backbone, tmp_path):
    e = LLM2VecGenEmbedder(tiny_backbone, num_special_tokens=3)
    assert torch.equal(e.rec_proj.weight, torch.eye(tiny_backbone.hidden_size))
    assert torch.equal(e.align_proj.weight, torch.eye(tiny_backbone.hidden_size))
    with torch.no_grad():
        e.rec_proj.weight.add_(0.01)  # make it "trained", so the round trip is not trivially identity
    e.save_pretrained(tmp_path / "gen")
    back = load_embedder(tmp_path / "gen", tiny_backbone)
    assert isinstance(back, LLM2VecGenEmbedder) and back.n_special == 3
    np.testing.assert_array_equal(back.encode(CORPUS), e.encode(CORPUS))


def test_llm2vec_gen_thought_tokens_are_neither_embedded_nor_decoded(tiny_backbone, tmp_path):
    """The paper's layout: T thought tokens, then K compression tokens; only the last K are the output."""
    e = LLM2VecGenEmbedder(tiny_backbone, num_special_tokens=3, num_thought_tokens=2)
    assert e.n_special == 5 and e.special_embeddings.shape[0] == 5
    b = e.collate(e.tokenize(CORPUS[:2], None))
    r, a = e.special_states(b)
    assert r.shape[1] == a.shape[1] == 3
    with torch.no_grad():  # the compression states are the last 3 specials' (causal: they read the thoughts)
        h = tiny_backbone.hidden_states(inputs_embeds=splice_specials(tiny_backbone, b["input_ids"], b["special_mask"],
                                                                      e.special_embeddings),
                                        attention_mask=b["attention_mask"])
        torch.testing.assert_close(r, h[b["special_mask"]].view(2, 5, -1)[:, 2:].float())
    assert len(e.decode(CORPUS[:2], max_new_tokens=3)) == 2
    e.save_pretrained(tmp_path / "gen")
    back = load_embedder(tmp_path / "gen", tiny_backbone)
    np.testing.assert_array_equal(back.encode(CORPUS), e.encode(CORPUS))
    assert "num_thought_tokens" not in LLM2VecGenEmbedder(tiny_backbone, num_special_tokens=3).config_key()


def test_llm2vec_gen_projection_to_other_dim(tiny_backbone):
    e = LLM2VecGenEmbedder(tiny_backbone, embed_dim=24)
    assert e.dim == 24 and e.encode(CORPUS).shape == (len(CORPUS), 24)


def test_decode_matches_a_greedy_loop_without_cache(tiny_backbone):
    """decode() (batched, KV cache, one model) produces what a naive full re-run produces."""
    e = LLM2VecGenEmbedder(tiny_backbone, num_special_tokens=3)
    texts = CORPUS[:3]
    got = e.decode(texts, max_new_tokens=6, batch_size=2, repetition_penalty=1.0)
    with torch.no_grad():
        r, _ = e.special_states(e.collate(e.tokenize(texts, e.config.query_instruction)))
        emb = tiny_backbone.model.get_input_embeddings()
        for i, text in enumerate(got):
            seq = r[i:i + 1]
            ids = []
            for _ in range(6):
                nxt = int(tiny_backbone.model(inputs_embeds=seq, use_cache=False).logits[0, -1].argmax())
                if nxt == tiny_backbone.tokenizer.eos_token_id:
                    break
                ids.append(nxt)
                seq = torch.cat([seq, emb(torch.tensor([[nxt]]))], 1)
            assert text == tiny_backbone.tokenizer.decode(ids, skip_special_tokens=True).strip()


def test_embedders_share_the_backbone(tiny_backbone):
    a, b = MeanPoolEmbedder(tiny_backbone), LLM2VecGenEmbedder(tiny_backbone)
    assert a.backbone is b.backbone is tiny_backbone
    own = {id(p) for p in b.parameters()}
    assert own.isdisjoint(id(p) for p in tiny_backbone.model.parameters())  # the adapter holds no backbone copy
    assert not any(k.startswith("backbone") for k in b.state_dict())
