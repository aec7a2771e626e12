"""GEM, LLM2Vec and bidirectional reconstruction on a fresh tiny Llama each (they inject LoRA)."""
import numpy as np
import pytest
import torch

from embedders.adapters import additive_mask, bidirectional_allowed, gem_allowed
from tests.conftest import CORPUS
from trainers.birecon import BiReconMethod, BiReconTrainConfig
from trainers.gem import GEMMethod, GEMTrainConfig, perplexity
from trainers.llm2vec import LLM2VecMethod, LLM2VecTrainConfig
from trainers.loop import train
from trainers.plot import read_log
from unified_rag import Embedder
from unified_rag.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [(str(i), t) for i, t in enumerate(CORPUS)]
PAIRS = [(str(i), t.split(" and ")[0], t, "") for i, t in enumerate(CORPUS)]
COMMON = dict(batch_size=6, lr=1e-2, lora_r=4, lora_alpha=8, save_every=100, plot=False, max_length=64)
METHODS = {
    "gem": (GEMMethod, GEMTrainConfig, TEXTS, dict(cl_start=3, p_ntp=0.5, lr_special=1e-2)),
    "llm2vec": (LLM2VecMethod, LLM2VecTrainConfig, TEXTS, dict(mntp_steps=3)),
    "birecon": (BiReconMethod, BiReconTrainConfig, PAIRS, dict(recon_steps=3)),
    # LLM2Vec with the supervised stage on pairs (MNTP first, then InfoNCE with distillation off)
    "llm2vec-pairs": (LLM2VecMethod, LLM2VecTrainConfig, PAIRS, dict(mntp_steps=3, pairs=["given"])),
    # GEM with real positives: NTP on the passages, CL through the shared supervised stage
    "gem-pairs": (GEMMethod, GEMTrainConfig, PAIRS, dict(cl_start=3, p_ntp=0.5, lr_special=1e-2, pairs=["given"])),
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


@pytest.mark.parametrize("name", ["gem", "llm2vec", "birecon", "llm2vec-pairs", "gem-pairs"])
def test_train_base_frozen_generation_kept_and_round_trip(fresh_tiny_backbone, tmp_path, name):
    b = fresh_tiny_backbone
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        base_logits = b.model(input_ids=probe).logits
    base = _base_weights(b.model)
    m, rows = _method(b, name)
    log = train(m, m.cfg, tmp_path, rows)
    stage_one = next(k for k in log[0] if k not in {"step", "loss", "lr", "elapsed_s"})  # ntp, mntp or d2q
    assert log[2][stage_one] < log[0][stage_one], [r[stage_one] for r in log[:3]]
    stage_two = [r["loss"] for r in log[3:]]  # the contrastive stage: finite, and a real InfoNCE value
    assert len(stage_two) == 3 and all(np.isfinite(stage_two)) and all(v > 0 for v in stage_two), stage_two
    after = _base_weights(b.model)
    assert all(torch.equal(base[k], after[k]) for k in base)  # only LoRA (and own tokens) moved
    assert not any(p.requires_grad for p in b.model.parameters())  # the shared model is frozen again
    with torch.no_grad():
        gen_logits = b.model(input_ids=probe).logits
    assert torch.equal(gen_logits, base_logits)  # adapter off outside the embedder, GEM's too
    if name == "gem":  # GEM generates with its adapter, inside the context a generator enters for it
        with m.emb.generation(), torch.no_grad():
            assert not torch.allclose(b.model(input_ids=probe).logits, base_logits)
            assert perplexity(b, CORPUS) > 1
        assert {"ntp", "cl"} <= log[-1].keys()  # the mixed loss: NTP stays after cl_start
        a = m.cfg.alpha
        assert log[-1]["loss"] == pytest.approx((1 - a) * log[-1]["ntp"] + a * log[-1]["cl"], abs=1e-5)
    m.save_output(tmp_path / "adapter")
    back = Embedder.from_pretrained(tmp_path / "adapter", backbone=b)  # a second adapter, same shared model
    assert back.kind == m.emb.kind and back.adapter_name != m.emb.adapter_name
    np.testing.assert_array_equal(back.encode(CORPUS), m.emb.encode(CORPUS))


def test_lora_resume_equals_uninterrupted(fresh_tiny_backbone, tmp_path):
    b = fresh_tiny_backbone
    full, rows = _method(b, "gem", steps=4, save_every=2)
    train(full, full.cfg, tmp_path / "a", rows)
    ref = [r["loss"] for r in read_log(tmp_path / "a")]
    state = full.checkpoint_state()
    part, _ = _method(b, "gem", steps=2, save_every=2)
    train(part, part.cfg, tmp_path / "b", rows)
    again, _ = _method(b, "gem", steps=4, save_every=2, resume=True)
    train(again, again.cfg, tmp_path / "b", rows)
    assert [r["loss"] for r in read_log(tmp_path / "b")] == ref
    now = again.checkpoint_state()
    assert state.keys() == now.keys() and all(torch.equal(state[k], v) for k, v in now.items())


def test_init_from_starts_from_a_checkpoints_tensors_with_a_fresh_optimizer(fresh_tiny_backbone, tmp_path):
    b = fresh_tiny_backbone
    first, rows = _method(b, "llm2vec-pairs", steps=2, save_every=2)
    train(first, first.cfg, tmp_path / "a", rows)
    done = first.checkpoint_state()
    ckpt = tmp_path / "a" / "checkpoints" / "step-0000002"
    warm, _ = _method(b, "llm2vec-pairs", steps=0, init_from=ckpt, hard_negatives="bm25")
    train(warm, warm.cfg, tmp_path / "b", rows)  # zero steps: only the warm start
    now = warm.checkpoint_state()
    assert now.keys() == done.keys() and all(torch.equal(done[k], v) for k, v in now.items())
    with pytest.raises(InputError, match="neither a checkpoint dir"):
        bad, _ = _method(b, "llm2vec-pairs", steps=1, init_from=tmp_path / "a")
        train(bad, bad.cfg, tmp_path / "c", rows)
    other, _ = _method(b, "gem-pairs", steps=1, init_from=ckpt)  # another method's tensors do not fit
    with pytest.raises(InputError, match="does not fit"):
        train(other, other.cfg, tmp_path / "d", rows)


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


@pytest.mark.parametrize("name", ["gem", "birecon"])
def test_validate_is_the_same_whether_resumed_or_not(fresh_tiny_backbone, tmp_path, name):
    b = fresh_tiny_backbone
    kw = dict(steps=4, save_every=2, val_examples=2)
    full, rows = _method(b, name, **kw)
    log = train(full, full.cfg, tmp_path / "a", rows)
    val = [{k: v for k, v in r.items() if k.startswith("val_")} for r in log]
    want = {"gem": {"val_ntp", "val_cl"}, "birecon": {"val_d2q", "val_q2d", "val_nce", "val_acc"}}[name]
    assert [set(v) for v in val] == [set(), want, set(), want]  # at every checkpoint
    assert all(np.isfinite(x) for v in val for x in v.values())
    part, _ = _method(b, name, **{**kw, "steps": 2})
    train(part, part.cfg, tmp_path / "b", rows)
    again, _ = _method(b, name, **{**kw, "resume": True})
    train(again, again.cfg, tmp_path / "b", rows)
    assert [{k: v for k, v in r.items() if k.startswith("val_")} for r in read_log(tmp_path / "b")] == val


def test_val_examples_need_a_validate(fresh_tiny_backbone, tmp_path):
    from trainers.method import Method

    class NoValidate(GEMMethod):
        validate = Method.validate

    cfg = GEMTrainConfig(**{**COMMON, "steps": 1, "val_examples": 2})
    with pytest.raises(InputError, match="val_examples"):
        train(NoValidate(fresh_tiny_backbone, cfg), cfg, tmp_path, TEXTS)


def test_birecon_embeds_the_appended_eos(fresh_tiny_backbone):
    m, _ = _method(fresh_tiny_backbone, "birecon")
    e, eos = m.emb, fresh_tiny_backbone.tokenizer.eos_token_id
    x = e.collate(e.tokenize(CORPUS[:2], None, max_length=8, warn=False))  # text cut to 7 tokens, EOS kept
    last = e.last_index(x["attention_mask"])
    assert (x["input_ids"][torch.arange(2), last] == eos).all() and (x["input_ids"][:, :last.min()] != eos).all()
    with torch.no_grad():
        h = e.hidden(x)
        assert torch.equal(e.embed_batch(x), h[torch.arange(2), last].float())


def test_gem_run_reports_perplexity_with_its_adapter_on(fresh_tiny_backbone, tmp_path):
    import json

    from trainers.gem import run

    fresh_tiny_backbone.save_pretrained(tmp_path / "model")
    (tmp_path / "texts.txt").write_text("\n".join(CORPUS * 2) + "\n")
    cfg = GEMTrainConfig(**{**COMMON, "steps": 3, "cl_start": 1, "heldout": 2, "val_examples": 2, "dtype": "fp32",
                            "model": str(tmp_path / "model"), "data": [tmp_path / "texts.txt"]})
    run(cfg, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "generation_quality.json").read_text())
    assert report["heldout_texts"] == 2 and report["generate_with_adapter"] is True
    assert report["perplexity_after"] != report["perplexity_before"]  # measured with the trained adapter on


@pytest.mark.parametrize("alpha", [-0.1, 1.0])
def test_gem_alpha_keeps_the_ntp_term(alpha):
    with pytest.raises(ValueError):
        GEMTrainConfig(alpha=alpha)
