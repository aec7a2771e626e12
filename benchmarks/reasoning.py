"""Reasoning-heavy retrieval: BRIGHT (per domain and averaged) and the offline TheoremQA stand-in.

BRIGHT's documents are not in ../shared/data: they come from the user's local corpus dir or the hub.
Offline, TheoremQA question -> theorem retrieval stands in, labelled as such in every report.
Headline: relative gain in nDCG@10 over the teacher (the paper reports up to +29.3% on BRIGHT).
"""
from __future__ import annotations

from .data import BRIGHT_DOMAINS, content_hash, load_bright, load_theoremqa
from .metrics import relative_change
from .retrieval import evaluate_set


def _gains(methods: dict, teacher: str, metric: str) -> dict:
    if teacher not in methods:
        return {}
    ref = methods[teacher]["metrics"][metric]
    return {n: {f"{metric}_gain_vs_teacher": relative_change(d["metrics"][metric], ref)}
            for n, d in methods.items() if n != teacher}


def run_theoremqa(methods: list, data=None, *, teacher: str = "all-MiniLM-L6-v2", n_queries: int | None = None,
                  cache=None, batch_size: int = 32) -> dict:
    ds = load_theoremqa(data).subset(n_queries)
    res = evaluate_set(methods, ds, ("ndcg@10", "recall@10"), cache=cache, batch_size=batch_size)
    return dict(suite="theoremqa", title="Reasoning-heavy retrieval: TheoremQA question -> theorem "
                "(OFFLINE STAND-IN for BRIGHT)", main_metric="ndcg@10", dataset=ds.describe(), methods=res,
                headline=_gains(res, teacher, "ndcg@10"),
                notes=["offline stand-in, not BRIGHT: questions without pictures retrieve the theorem they name, "
                       "among all 354 theorem descriptions (LLM-written)"])


def run_bright(methods: list, corpus=None, *, hf: str | None = None, domains=BRIGHT_DOMAINS, topics=None,
               fixed: bool = True, teacher: str = "all-MiniLM-L6-v2", cache=None, batch_size: int = 32) -> dict:
    """nDCG@10 per domain and the macro average. Excluded ids never count as retrieved."""
    per: dict[str, dict] = {}
    hashes = {}
    for dom in domains:
        ds = load_bright(dom, corpus, topics=topics, fixed=fixed, hf=hf)
        hashes[dom] = ds.hash
        for name, d in evaluate_set(methods, ds, ("ndcg@10",), curve=None, cache=cache, batch_size=batch_size).items():
            per.setdefault(name, {**d, "metrics": {}})["metrics"][f"ndcg@10/{dom}"] = d["metrics"]["ndcg@10"]
    for d in per.values():
        d["metrics"]["ndcg@10"] = sum(d["metrics"][f"ndcg@10/{dom}"] for dom in domains) / len(domains)
        d.pop("encode", None)
    return dict(suite="bright", title="Reasoning-heavy retrieval: BRIGHT", main_metric="ndcg@10", methods=per,
                headline=_gains(per, teacher, "ndcg@10"),
                dataset=dict(name="bright", domains=list(domains), source=str(corpus or f"hub:{hf}"),
                             qrels="fixed" if fixed else "original", hash=content_hash(hashes)))
