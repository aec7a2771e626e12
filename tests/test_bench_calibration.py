"""Hybrid calibration: the held-out set is exactly what the trainer holds out, and the grid runs
through the benchmarks' own hybrid (weight 0 is BM25 alone, weight 1 the dense method alone)."""
import json

import pytest

from benchmarks.calibration import WEIGHTS, calibrate_fusion, held_out_set
from trainers.data import read_pairs, subsample
from unified_rag import MeanPoolEmbedder

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def _config(tmp_path, val=6):
    rows = [{"query": f"which {WORDS[i % 18]} {WORDS[(i * 7) % 18]} is {i}",
             "positive": f"the {WORDS[i % 18]} and {WORDS[(i * 7) % 18]} item number {i}"} for i in range(40)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"pairs": [str(pairs)], "seed": 3, "val_examples": val}))
    return cfg, pairs


def test_held_out_set_is_the_trainers_held_out_pairs(tmp_path):
    cfg, pairs = _config(tmp_path)
    ds = held_out_set(cfg, n_docs=20)
    val = subsample(read_pairs([pairs]), None, 3)[-6:]
    assert sorted(ds.queries.values()) == sorted(r[1] for r in val)
    assert len(ds.corpus) == 20
    for q, rel in ds.qrels.items():  # each query's judged passage is its own positive, and in the corpus
        (pid,) = rel
        assert ds.corpus[pid] == next(r[2] for r in val if r[1] == ds.queries[q])
    cfg.write_text(json.dumps({"pairs": [str(pairs)], "val_examples": 0}))
    with pytest.raises(ValueError, match="holds nothing out"):
        held_out_set(cfg)


def test_fusion_grid_ends_are_the_two_rankings(tiny_backbone, tmp_path):
    cfg, _ = _config(tmp_path)
    ds = held_out_set(cfg, n_docs=20)
    r = calibrate_fusion(MeanPoolEmbedder(tiny_backbone, query_instruction=None), ds, depth=20)
    grid = {row["dense_weight"]: row for row in r["tables"]["Fusion grid"]}
    assert tuple(grid) == WEIGHTS and r["best_dense_weight"] in WEIGHTS
    assert grid[0.0]["ndcg@10"] == pytest.approx(r["methods"]["bm25"]["metrics"]["ndcg@10"])
    assert grid[1.0]["ndcg@10"] == pytest.approx(r["methods"]["dense"]["metrics"]["ndcg@10"])
    assert grid[r["best_dense_weight"]]["ndcg@10"] == max(row["ndcg@10"] for row in grid.values())


def test_relevance_cut_separates_with_and_without_the_own_passage():
    from benchmarks.calibration import calibrate_relevance

    qrels = {"a": {"pa": 1}, "b": {"pb": 1}}
    dense = {"a": {"pa": 0.9, "x": 0.4}, "b": {"pb": 0.8, "y": 0.5}}  # own passages high, others low
    r = calibrate_relevance(dense, qrels)
    best, balanced = r["best"], r["balanced"]
    assert 0.5 < balanced["min_relevance"] <= 0.8 and balanced["answered"] == balanced["declined"] == 1.0
    assert best["min_relevance"] == 0.8 and best["gold_kept"] == 1.0  # the highest cut keeping both own passages
    strict = calibrate_relevance(dense, qrels, keep=0.5)["best"]  # may drop one of the two
    assert strict["min_relevance"] == 0.9 and strict["gold_kept"] == 0.5
    assert [row["min_relevance"] for row in r["grid"]] == sorted(row["min_relevance"] for row in r["grid"])
    assert r["grid"][0]["answered"] == 1.0 and r["grid"][0]["declined"] == 0.0  # the lowest cut declines nothing
