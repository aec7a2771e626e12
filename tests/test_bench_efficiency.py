"""The efficiency workers run and report their fields (no timing is asserted)."""
import json

import pytest

from benchmarks import efficiency as E


def test_index_worker_in_subprocess():
    r = E.spawn("index", kind="hnsw", n=3000, dim=16, n_queries=20)
    assert r["kind"] == "hnsw" and r["n"] == 3000 and 0 <= r["recall_at_10"] <= 1
    assert {"build_s", "qps", "index_mb"} <= set(r)


def test_index_worker_exact_is_exact():
    assert E.worker_index("flat", 2000, 16, n_queries=20)["recall_at_10"] == 1.0


def test_pipeline_workers_on_a_tiny_model(tiny_backbone, tmp_path):
    tiny_backbone.save_pretrained(tmp_path / "tiny")
    for layout in ("a", "b"):
        r = E.worker_pipeline(layout, embedder="mean", model=str(tmp_path / "tiny"), dtype="fp32", n_docs=4,
                              n_queries=2, max_new_tokens=3)
        assert r["layout"] == layout and r["queries"] == 2 and r["chunks"] >= 4
        assert {"answer_p50_ms", "answer_p95_ms", "ttft_p50_ms", "retrieve_p95_ms", "peak_rss_mb"} <= set(r)
    one = E.worker_pipeline("a", embedder="mean", model=str(tmp_path / "tiny"), dtype="fp32", n_docs=2, n_queries=1,
                            max_new_tokens=2)
    two = E.worker_pipeline("b", embedder="mean", model=str(tmp_path / "tiny"), dtype="fp32", n_docs=2, n_queries=1,
                            max_new_tokens=2)
    # Counted from the storages the parts really hold: the one-copy layout counts the model once, the
    # reference layout's second load really is a second copy. Sharing by mistake would fail either line.
    assert one["param_mb"] == tiny_backbone.param_bytes() / 2**20
    assert two["param_mb"] == 2 * one["param_mb"]


def test_encode_worker_on_a_tiny_model(tiny_backbone, tmp_path):
    tiny_backbone.save_pretrained(tmp_path / "tiny")
    r = E.worker_encode("mean", model=str(tmp_path / "tiny"), dtype="fp32", max_length=32, batch_size=8, n_docs=16)
    assert r["docs"] == 16 and 16 < r["tokens"] <= 16 * 32  # at most max_length tokens a doc
    assert r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"]) and r["docs_per_s"] == pytest.approx(16 / r["seconds"])
    assert r["param_mb"] == tiny_backbone.param_bytes() / 2**20  # the saved copy it loaded, counted once


def test_run_efficiency_end_to_end(tiny_backbone, tmp_path):
    """The whole suite on a tiny model: every figure present, report and plots written."""
    from benchmarks.report import write

    tiny_backbone.save_pretrained(tmp_path / "tiny")
    res = E.run_efficiency("mean", model=str(tmp_path / "tiny"), dtype="fp32", max_length=32, batch_size=8,
                           n_docs=8, n_queries=1, max_new_tokens=2, index_sizes=[2000], pipeline_docs=3,
                           matmul_n=256)
    (m,) = res["methods"].values()
    assert {"tokens_per_s", "docs_per_s", "peak_rss_mb", "param_mb", "mfu"} <= set(m["metrics"])
    assert [r["layout"] for r in res["tables"]["Pipelines"]] == ["a", "b", "c"]
    assert [r["kind"] for r in res["tables"]["Index scale"]] == ["flat", "ivf", "hnsw"]
    assert res["matmul_peak_tflops"]["fp32"] > 0
    out = write(res, tmp_path / "out")
    assert "## Pipelines" in (out / "report.md").read_text() and (out / "pipelines.png").is_file()


def test_index_scale_sweeps_hnsw_ef_search_on_one_graph(tmp_path):
    from typer.testing import CliRunner

    from benchmarks.cli import app

    r = CliRunner().invoke(app, ["index-scale", "--sizes", "3000", "--kinds", "hnsw,ivf", "--dim", "16",
                                 "--ef-search", "10,200", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    rows, sweep = res["tables"]["Index scale"], res["tables"]["HNSW efSearch"]
    assert [row["kind"] for row in rows] == ["hnsw", "ivf"]
    assert [s["ef_search"] for s in sweep] == [10, 200]
    assert sweep[1]["recall_at_10"] >= sweep[0]["recall_at_10"] and sweep[1]["recall_at_10"] > 0.9
    bad = CliRunner().invoke(app, ["index-scale", "--kinds", "lsh", "-o", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "unknown index kind 'lsh'" in bad.output


def test_throughput_compare_hf_with_bound_on_a_tiny_model(tiny_backbone, tmp_path):
    """--compare-hf --bound runs alternating rounds on the model's own projections and reports medians."""
    from benchmarks import throughput

    tiny_backbone.save_pretrained(tmp_path / "tiny")
    r = throughput.main(["--model", str(tmp_path / "tiny"), "--embedder", "mean", "--batch-size", "2", "--batches", "2",
                         "--seq-len", "16", "--dtype", "fp32", "--compare-hf", "--bound", "--rounds", "2"])
    assert len(r["rounds"]) == 2 and all(x["matmul_attention_s"] > 0 for x in r["rounds"])
    assert r["library_over_hf"] > 0 and r["ceiling_over_hf"] > 0


def test_throughput_compare_hf_times_a_lora_embedder_merged_and_unmerged(tiny_backbone, tmp_path):
    from benchmarks import throughput
    from unified_rag import lora as adapters

    tiny_backbone.save_pretrained(tmp_path / "tiny")
    r = throughput.main(["--model", str(tmp_path / "tiny"), "--embedder", "llm2vec", "--batch-size", "2",
                         "--batches", "2", "--seq-len", "48", "--dtype", "fp32", "--compare-hf", "--rounds", "2"])
    assert all(x["library_peft_lora_s"] > 0 for x in r["rounds"])
    assert r["peft_lora_over_hf"] > 0 and r["merged_over_peft_lora"] > 0
    assert adapters.MERGE_AT_INFERENCE  # restored after the unmerged timing


def test_index_overhead_reports_the_retokenizing_share(tiny_backbone):
    """Indexing n SciFact documents is timed against encoding the same chunks, and the second
    tokenization (the most "tokenize once" could save) is reported as its share of the encode."""
    from unified_rag import MeanPoolEmbedder

    from benchmarks import throughput
    from tests.conftest import need_data

    need_data("scifact")
    o = throughput.index_overhead_figures(tiny_backbone, MeanPoolEmbedder(tiny_backbone), 3, batch_size=2)
    assert o["docs"] == 3 and o["chunks"] >= 3
    # Seconds are rounded for the report (a tiny model's encode can show as 0.0); the share is not.
    assert o["index_s"] >= 0 and o["encode_s"] >= 0 and o["retokenize_s"] >= 0 and o["retokenize_share"] > 0
    assert o["ratio"] > 0


def test_decode_figures_time_three_decoders_on_the_same_prompts(tiny_backbone):
    """HF generate, the library's loop and its int8 weights, each forced to the same length, on real
    squad-rag prompts; every figure is present and the library's full-precision text equals HF's."""
    from benchmarks import throughput
    from tests.conftest import need_data

    need_data("squad-rag")
    d = throughput.decode_figures(tiny_backbone, 2, new_tokens=6, answer_tokens=4)
    assert d["prompts"] == 2 and d["int8_mb"] > 0
    for side in ("hf_generate", "library", "library_int8"):
        # speeds are figures, not asserted: a tiny model's decode time is lost in timer noise
        assert isinstance(d[side]["decode_tokens_per_s"], float) and 0 <= d[side]["f1"] <= 1
    assert d["library"]["same_text_as_hf"] == 2  # float32: the same arithmetic, the same greedy picks
    assert "over_hf" in d["library"] and "over_hf" not in d["hf_generate"]
