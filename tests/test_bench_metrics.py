"""The metrics path (ir-measures over pytrec_eval) against a tiny example worked out by hand."""
import math

import numpy as np
import pytest

from benchmarks.baselines import BM25
from benchmarks.metrics import evaluate, relative_change
from benchmarks.retrieval import search


def test_metrics_hand_checked():
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d5": 1}}
    run = {"q1": {"d2": 0.9, "d1": 0.8, "d3": 0.7, "d4": 0.1}, "q2": {"d1": 0.5, "d2": 0.4}}
    m = evaluate(qrels, run, ["ndcg@10", "mrr@10", "recall@2", "hit_rate@1", "hit_rate@3"])
    # q1: relevant at ranks 2 and 3. DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3). q2: nothing.
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx(ndcg_q1 / 2)
    assert m["mrr@10"] == pytest.approx(0.5 / 2)
    assert m["recall@2"] == pytest.approx(0.5 / 2)
    assert m["hit_rate@1"] == 0 and m["hit_rate@3"] == pytest.approx(0.5)


def test_judged_query_without_results_counts_as_zero():
    assert evaluate({"a": {"x": 1}, "b": {"y": 1}}, {"a": {"x": 1.0}}, "ndcg@10")["ndcg@10"] == pytest.approx(0.5)


def test_relative_change():
    assert relative_change(0.3, 0.4) == pytest.approx(-0.25) and relative_change(1, 0) is None


class _Fixed:
    """A dense 'method' with given vectors: checks the exact search and the exclusions."""
    kind, name, fingerprint = "fixed", "fixed", "f" * 16

    def __init__(self, vecs):
        self.vecs = vecs

    def encode_documents(self, texts, **kw):
        return np.stack([self.vecs[t] for t in texts])

    encode_queries = encode_documents


def test_dense_search_ranks_and_excludes(tmp_path):
    v = {"a": [1.0, 0.0], "b": [0.8, 0.6], "c": [0.0, 1.0], "q": [1.0, 0.0]}
    m = _Fixed({k: np.asarray(x, dtype=np.float32) for k, x in v.items()})
    run, _ = search(m, {"A": "a", "B": "b", "C": "c"}, {"q1": "q"}, 2, cache=tmp_path)
    assert list(run["q1"]) == ["A", "B"]
    run, _ = search(m, {"A": "a", "B": "b", "C": "c"}, {"q1": "q"}, 2, excluded={"q1": {"A"}}, cache=tmp_path)
    assert list(run["q1"]) == ["B", "C"]


def test_bm25_ranks_the_matching_doc_first():
    docs = {"1": "the cat sat on the mat", "2": "vitamin d and bone density in 2 trials", "3": "paris is in france"}
    run = BM25().search(list(docs), list(docs.values()), {"q": "vitamin D bone"}, 3)
    assert next(iter(run["q"])) == "2"
