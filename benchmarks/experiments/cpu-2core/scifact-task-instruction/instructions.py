"""Side run: auto on full SciFact with three query instructions (docs at max_length 512), and RRF at two weights."""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.baselines import load_methods, BM25
from benchmarks.data import load_beir
from benchmarks.cache import encode
from benchmarks.metrics import evaluate
from unified_rag.sparse import hybrid_fusion
ds = load_beir()
emb, = load_methods("auto", dtype="bf16")
docs = list(ds.corpus); qids = list(ds.queries)
D, info = encode(emb, list(ds.corpus.values()), "document")
print("doc cache hit", info["cache_hit"])
def run_of(Q):
    S = Q @ D.T; run = {}
    for r, q in enumerate(qids):
        top = np.argsort(-S[r])[:100]; run[q] = {docs[i]: float(S[r, i]) for i in top}
    return run
instrs = {"default": emb.config.query_instruction,
          "mteb-scifact": "Given a scientific claim, retrieve documents that support or refute the claim",
          "none": None}
from benchmarks.retrieval import search
sparse, _ = search(BM25(), ds.corpus, ds.queries, 100)
print("bm25", evaluate(ds.qrels, sparse, ["ndcg@10"]))
for name, ins in instrs.items():
    Q = emb.encode_queries([ds.queries[q] for q in qids], instruction=ins, batch_size=32)
    Q = np.asarray(Q, dtype=np.float32); Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    run = run_of(Q)
    out = {"dense": evaluate(ds.qrels, run, ["ndcg@10", "recall@100"])}
    for w in (0.5, 0.8):
        fused = {q: dict(hybrid_fusion(list(run[q]), list(sparse[q]), w)[:100]) for q in qids}
        out[f"rrf{w}"] = evaluate(ds.qrels, fused, ["ndcg@10"])["ndcg@10"]
    print(name, json.dumps(out), flush=True)
