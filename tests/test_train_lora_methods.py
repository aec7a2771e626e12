"""GEM, LLM2Vec and bidirectional reconstruction on a fresh tiny Llama each (they inject LoRA)."""
import numpy as np
import pytest
import torch

from embedders.adapters import additive_mask, bidirectional_allowed, gem_allowed
from tests.conftest import CORPUS
from trainers.birecon import BiReconMethod, BiReconTrainConfig
from trainers.common import train
from trainers.gem import GEMMethod, GEMTrainConfig, perplexity
from trainers.llm2vec import LLM2VecMethod, LLM2VecTrainConfig
from unified_rag import Embedder

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [(str(i), t) for i, t in enumerate(CORPUS)]
PAIRS = [(str(i), t.split(" and ")[0], t) for i, t in enumerate(CORPUS)]
COMMON = dict(batch_size=6, lr=1e-2, lora_r=4, lora_alpha=8, save_every=100, plot=False, max_length=64)
METHODS = {
    "gem": (GEMMethod, GEMTrainConfig, TEXTS, dict(cl_start=3, p_ntp=0.5, lr_special=1e-2)),
    "llm2vec": (LLM2VecMethod, LLM2VecTrainConfig, TEXTS, dict(mntp_steps=3)),
    "birecon": (BiReconMethod, BiReconTrainConfig, PAIRS, dict(recon_steps=3)),
}


def _method(backbone, name, **kw):
    cls, cfg_cls, rows, extra = METHODS[name]
    cfg = cfg_cls(**{**COMMON, "steps": 6, **extra, **kw})
    return cls(backbone, cfg), rows


def test_gem_mask_entry_by_entry():
    # one row: prefix p0 p1 | specials s2 s3 | suffix x4 x5 | pad
    am = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    got = gem_allowed(am, torch.tensor([2]), torch.tensor([2]))[0].int()
    want = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0],  # p0: causal
        [1, 1, 0, 0, 0, 0, 0],  # p1
        [1, 1, 1, 0, 0, 0, 0],  # s2: prefix + itself
        [1, 1, 0, 1, 0, 0, 0],  # s3: prefix + itself, not s2
        [0, 0, 1, 1, 1, 0, 0],  # x4: the specials and itself, never the prefix
        [0, 0, 1, 1, 1, 1, 0],  # x5
        [0, 0, 1, 1, 1, 1, 0],  # pad query row: keys limited to real tokens (its output is unused)
    ])
    assert torch.equal(got, want)
    add = additive_mask(gem_allowed(am, torch.tensor([2]), torch.tensor([2])), torch.float32)
    assert add.shape == (1, 1, 7, 7) and add[0, 0, 3, 2] == torch.finfo(torch.float32).min and add[0, 0, 3, 3] == 0
    assert torch.equal(bidirectional_allowed(am)[0, 0], am[0].bool())


def test_llm2vec_is_bidirectional_and_generation_stays_causal(fresh_tiny_backbone):
    b = fresh_tiny_backbone
    m, _ = _method(b, "llm2vec")
    e = m.emb
    x = e.collate(e.tokenize(["the cell makes energy", "the cell makes water"], None))
    assert x["input_ids"][0, 0] == x["input_ids"][1, 0] and x["input_ids"][0, -1] != x["input_ids"][1, -1]
    with torch.no_grad():
        h = e.token_states(x)
        assert (h[0, 0] - h[1, 0]).abs().max() > 1e-4  # a later token changed the first token's state
        causal = b.model(input_ids=x["input_ids"], attention_mask=x["attention_mask"], output_hidden_states=True)
        assert torch.equal(causal.hidden_states[-1][0, 0], causal.hidden_states[-1][1, 0])


def _base_weights(model):
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


@pytest.mark.parametrize("name", ["gem", "llm2vec", "birecon"])
def test_train_base_frozen_generation_kept_and_round_trip(fresh_tiny_backbone, tmp_path, name):
    b = fresh_tiny_backbone
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        base_logits = b.model(input_ids=probe).logits
    base = _base_weights(b.model)
    m, rows = _method(b, name)
    log = train(m, m.cfg, tmp_path, rows)
    first, last = log[0][next(iter(log[0]))], log[2][next(iter(log[2]))]  # stage one's loss, steps 1 and 3
    assert log[2]["loss"] < log[0]["loss"], (first, last)
    after = _base_weights(b.model)
    assert all(torch.equal(base[k], after[k]) for k in base)  # only LoRA (and own tokens) moved
    assert not any(p.requires_grad for p in b.model.parameters())  # the shared model is frozen again
    with torch.no_grad():
        gen_logits = b.model(input_ids=probe).logits
    if name == "gem":  # GEM keeps its adapter on for generation on purpose: generation changes
        assert not torch.allclose(gen_logits, base_logits)
        assert perplexity(b, CORPUS) > 1
    else:
        assert torch.equal(gen_logits, base_logits)  # adapter off outside the embedder
    m.save_output(tmp_path / "adapter")
    back = Embedder.from_pretrained(tmp_path / "adapter", backbone=b)  # a second adapter, same shared model
    assert back.kind == name and back.adapter_name != m.emb.adapter_name
    np.testing.assert_array_equal(back.encode(CORPUS), m.emb.encode(CORPUS))


def test_lora_resume_equals_uninterrupted(fresh_tiny_backbone, tmp_path):
    b = fresh_tiny_backbone
    full, rows = _method(b, "gem", steps=4, save_every=2)
    train(full, full.cfg, tmp_path / "a", rows)
    ref = [r["loss"] for r in __import__("trainers.common", fromlist=["read_log"]).read_log(tmp_path / "a")]
    state = full.checkpoint_state()
    part, _ = _method(b, "gem", steps=2, save_every=2)
    train(part, part.cfg, tmp_path / "b", rows)
    again, _ = _method(b, "gem", steps=4, save_every=2, resume=True)
    train(again, again.cfg, tmp_path / "b", rows)
    from trainers.common import read_log

    assert [r["loss"] for r in read_log(tmp_path / "b")] == ref
    now = again.checkpoint_state()
    assert state.keys() == now.keys() and all(torch.equal(state[k], v) for k, v in now.items())


def test_gem_full_fine_tuning_saves_and_loads_the_shared_weights(tmp_path):
    from tests.conftest import make_tiny_backbone

    b = make_tiny_backbone()
    m, rows = _method(b, "gem", lora_r=0, steps=2, lr=1e-3)
    assert all(p.requires_grad for p in b.model.parameters())  # every shared weight trains
    before = _base_weights(b.model)
    train(m, m.cfg, tmp_path, rows)
    assert any(not torch.equal(before[k], p) for k, p in _base_weights(b.model).items())
    m.save_output(tmp_path / "adapter")
    other = make_tiny_backbone()  # untrained weights: loading writes the trained ones into it, in place
    back = Embedder.from_pretrained(tmp_path / "adapter", backbone=other)
    np.testing.assert_array_equal(back.encode(CORPUS), m.emb.encode(CORPUS))
