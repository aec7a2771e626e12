"""Probe of the 40-step BiRecon adapter: how alike its vectors are (first 40 SciFact documents, 20 queries).

    python benchmarks/experiments/cpu-2core/birecon-smollm2/collapse.py
"""
import sys; sys.path.insert(0, ".")  # run from the repository root
import numpy as np
from unified_rag.backbone import Backbone
from embedders import load_embedder
from benchmarks.data import load_beir
bb = Backbone.from_pretrained(dtype="bf16"); e = load_embedder("runs/birecon-smollm2/adapter", bb)
ds = load_beir(); docs = list(ds.corpus.values())[:40]; qs = list(ds.queries.values())[:20]
D = e.encode_documents(docs, batch_size=8); Q = e.encode_queries(qs, batch_size=8)
S = D @ D.T; print("doc-doc cos mean", S[np.triu_indices(40, 1)].mean(), "min", S.min())
print("q-doc cos mean", (Q @ D.T).mean(), "std", (Q @ D.T).std())
short = e.encode_documents([d[:300] for d in docs], batch_size=8); print("short-doc vs doc cos", (short * D).sum(1).mean())
