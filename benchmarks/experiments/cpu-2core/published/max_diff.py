"""Largest absolute difference between this library's embeddings and the official packages' recorded ones,
on the fixtures in tests/fixtures/published (the figures docs/guide.md quotes; the tests assert <= 1e-4).

    python benchmarks/experiments/cpu-2core/published/max_diff.py > benchmarks/experiments/cpu-2core/published/max_diff.json
"""
import json
from pathlib import Path

import numpy as np

from unified_rag import UnifiedRAG

F = Path(__file__).resolve().parents[4] / "tests" / "fixtures" / "published"
out = {}

e = json.loads((F / "gritlm" / "expected.json").read_text())
rag = UnifiedRAG.from_pretrained(F / "gritlm" / "model", dtype="fp32", generator_adapter=None)
for form, instr in (("document", ""), ("query", e["task"])):
    got = rag.embedder.encode(e["texts"], instruction=instr)
    out[f"gritlm/{form}"] = float(np.abs(got - np.array(e["forms"][form]["embeddings"], dtype=np.float32)).max())

e = json.loads((F / "llm2vec" / "expected.json").read_text())
mntp = UnifiedRAG.from_pretrained(F / "llm2vec" / "mntp", dtype="fp32", generator_adapter=None)
sup = UnifiedRAG.from_pretrained(mntp.backbone, embedder=F / "llm2vec" / "supervised", generator_adapter=None)
for sc in e["scenarios"]:
    emb, st = (sup if "supervised" in sc["adapters"] else mntp).embedder, sc["settings"]
    saved = emb.config
    emb.config = saved.model_copy(update=dict(max_length=st["max_length"], doc_max_length=st["doc_max_length"],
                                              skip_instruction=st["skip_instruction"],
                                              template="llama3" if st["config_name_or_path"] == "meta-llama/Meta-Llama-3-8B-Instruct" else None))
    worst = 0.0
    for it in sc["items"]:
        instr, text = it["input"] if isinstance(it["input"], list) else ("", it["input"])
        got = emb.encode([text], instruction=instr, normalize=False)[0]
        worst = max(worst, float(np.abs(got - np.array(it["embedding"], dtype=np.float32)).max()))
    emb.config = saved
    out[f"llm2vec/{sc['name']}"] = worst

e = json.loads((F / "llm2vec-gen" / "expected.json").read_text())
for name in ("lora-tokens", "tokens-only"):
    ck = e["checkpoints"][name]
    rag = UnifiedRAG.from_pretrained(F / "llm2vec-gen" / name, dtype="fp32", generator_adapter=None)
    out[f"llm2vec-gen/{name}"] = max(float(np.abs(rag.embedder.encode([it["text"]], normalize=False, warn_truncation=False)[0]
                                                   - np.array(it["embedding"], dtype=np.float32)).max())
                                     for it in ck["encode_per_text"])
print(json.dumps(out, indent=2))
