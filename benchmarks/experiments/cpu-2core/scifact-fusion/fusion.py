"""Side run (diagnostic, not a tuning step): nDCG@10 on full SciFact of every fusion weight, for
reciprocal rank fusion (k 60, the library's fusion before) and the z-score convex combination (now),
over plain and stemmed BM25, with the shipped `auto` as the dense half (task instruction, 256-token
documents, as `bench retrieval`). The library's default weight is not taken from this grid: it is
the even 0.5 (unified_rag/sparse.py says why). Run from the repository root after
`unified-rag bench retrieval -e auto --dtype bf16`, whose encode cache it reuses:

    python benchmarks/experiments/cpu-2core/scifact-fusion/fusion.py | tee benchmarks/experiments/cpu-2core/scifact-fusion/fusion.log
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.baselines import BM25, Hybrid, load_methods
from benchmarks.data import load_beir
from benchmarks.metrics import evaluate
from benchmarks.retrieval import search

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def rrf(dense_ids, sparse_ids, w, k=60):
    """Weighted reciprocal rank fusion (Cormack et al., 2009), the library's fusion before this run."""
    fused = {}
    for ids, weight in ((dense_ids, w), (sparse_ids, 1 - w)):
        for rank, i in enumerate(ids, 1):
            fused[i] = fused.get(i, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


ds = load_beir()
emb, = load_methods("auto", dtype="bf16", max_length=256)  # as bench retrieval: its encode cache
dense, info = search(emb, ds.corpus, ds.queries, 100, query_instruction=ds.query_instruction)
print(f"auto (encode cache hit: {info['documents'][0]['cache_hit']}) nDCG@10 {evaluate(ds.qrels, dense, ['ndcg@10'])['ndcg@10']:.4f}")
for stem in (False, True):
    bm25 = BM25(stem=stem)
    sparse, _ = search(bm25, ds.corpus, ds.queries, 100)
    print(f"{bm25.name}: nDCG@10 {evaluate(ds.qrels, sparse, ['ndcg@10'])['ndcg@10']:.4f}")
    for fusion in ("rrf", "zscore"):
        row = []
        for w in WEIGHTS:
            if fusion == "rrf":
                run = {q: dict(rrf(list(dense[q]), list(sparse.get(q, {})), w)[:100])
                       for q in dense}
            else:
                run = Hybrid(emb, dense_weight=w).fuse(dense, sparse, 100)
            row.append(f"{w}: {evaluate(ds.qrels, run, ['ndcg@10'])['ndcg@10']:.4f}")
        print(f"  {fusion:6s} dense weight -> nDCG@10  " + "  ".join(row), flush=True)
