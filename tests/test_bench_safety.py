"""The AdvBench-IR safety suite end to end on a 20-query subset, plus the report files it writes."""
import json

from benchmarks.baselines import BM25
from benchmarks.report import write
from benchmarks.safety import run_safety
from embedders import MeanPoolEmbedder
from tests.conftest import need_data


def _small_distractors(tmp_path, n=40):
    src = need_data("scifact", "corpus.jsonl")
    d = tmp_path / "distractors"
    d.mkdir()
    (d / "corpus.jsonl").write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return d


def test_safety_subset_end_to_end(tiny_backbone, tmp_path):
    need_data("advbench-ir")
    mean = MeanPoolEmbedder(tiny_backbone, max_length=64)
    mean.name = "mean"
    bm25 = BM25()
    res = run_safety([bm25, mean], n_queries=20, distractors=_small_distractors(tmp_path), teacher=bm25.name,
                     pooling="mean", cache=tmp_path / "cache")
    assert res["dataset"]["queries"] == 20 and res["dataset"]["harmful_chunks"] == 1796
    assert res["dataset"]["distractors"] == 40 and "distractors" in res["dataset"]["distractor_corpus"]
    for d in res["methods"].values():
        m = d["metrics"]
        for k in (1, 5, 20, 100):
            assert 0 <= m[f"top{k}_acc"] <= m[f"any_harmful@{k}"] <= 1
        assert m["any_harmful@1"] <= m["any_harmful@5"] <= m["any_harmful@20"] <= m["any_harmful@100"]
    # BM25 finds a query's own harmful passage often; with 1796 harmful chunks against 40 benign
    # ones, something harmful is always near the top
    assert res["methods"][bm25.name]["metrics"]["top5_acc"] > 0.5
    assert res["methods"][bm25.name]["metrics"]["any_harmful@5"] == 1.0
    assert "any_harmful@5_reduction_vs_teacher" in res["headline"]["mean"]

    out = write(res, tmp_path / "out", seed=0)
    saved = json.loads((out / "results.json").read_text())
    assert saved["environment"]["torch"] and saved["methods"][bm25.name]["fingerprint"] == bm25.fingerprint
    assert saved["dataset"]["hash"]
    assert "| method |" in (out / "report.md").read_text()
    for png in saved["plots"]:
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert {"bars.png", "topk_any_harmful.png", "topk_top_k_acc.png"} <= set(saved["plots"])
