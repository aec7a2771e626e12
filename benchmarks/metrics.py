"""The one metrics path: ir-measures over pytrec_eval (trec_eval's C code), never hand-written formulas.

(ranx gives the same figures but JIT-compiles every metric in every new process: minutes on 2 busy
cores, against milliseconds here.) A run is {query id: {doc id: score}}; qrels are {query id: {doc
id: relevance}}; ids are strings. Names are ours, lowercase: ndcg@k, recall@k, mrr@k, hit_rate@k.
"""
from __future__ import annotations

from unified_rag.errors import InputError

RETRIEVAL = ("ndcg@10", "recall@100", "mrr@10")
_NAMES = {"ndcg": "nDCG", "recall": "R", "mrr": "RR", "hit_rate": "Success", "precision": "P"}


def _measure(name: str):
    import ir_measures

    base, _, k = name.partition("@")
    if base not in _NAMES or not k.isdigit():
        raise InputError(f"unknown metric {name!r}; use {', '.join(_NAMES)} with @k")
    return ir_measures.parse_measure(f"{_NAMES[base]}@{k}")


def evaluate(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], metrics) -> dict[str, float]:
    """Mean of each metric over the judged queries. A judged query with no results scores 0 (it is
    still in the mean); results for unjudged queries are ignored."""
    import ir_measures

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not qrels:
        raise InputError("no judged queries to evaluate")
    measures = {m: _measure(m) for m in metrics}
    run = {q: r for q, r in run.items() if q in qrels and r}
    agg = ir_measures.calc_aggregate(list(measures.values()), qrels, run) if run else {}
    return {m: float(agg.get(meas, 0.0)) for m, meas in measures.items()}


def relative_change(value: float, reference: float) -> float | None:
    """(value - reference) / reference: the paper's 'x% less harmful retrieval' / '+y% on BRIGHT'."""
    return None if not reference else (value - reference) / reference
