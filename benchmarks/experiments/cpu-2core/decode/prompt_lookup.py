"""Side run: how many decoder forwards prompt-lookup decoding (HF `prompt_lookup_num_tokens`: draft
the next tokens by matching the last n-gram against the prompt, verify them in one forward) saves on
RAG prompts, against plain greedy `model.generate`, 64 new tokens at batch 1. Prompts: every 700th
squad-rag question with its gold paragraph and two other paragraphs, laid out by the library's
`rag_prompt` (paragraphs as the library's BEIR loader gives them: title, then text). The forward
counts do not depend on the machine or its load; the seconds do. The library does not ship it.

    python benchmarks/experiments/cpu-2core/decode/prompt_lookup.py | tee benchmarks/experiments/cpu-2core/decode/prompt_lookup.log
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.rag_qa import load_squad_rag  # noqa: E402
from unified_rag.backbone import Backbone  # noqa: E402
from unified_rag.generator import Generator  # noqa: E402
from unified_rag.types import Hit  # noqa: E402

ds, _ = load_squad_rag()
corpus, queries = ds.corpus, list(ds.queries.items())[::700]
gold = {q: next(iter(rel)) for q, rel in ds.qrels.items()}  # one gold paragraph per question
bb = Backbone.from_pretrained(dtype="bf16")
gen, model, doc_ids = Generator(bb), bb.model, list(corpus)
forwards = 0
plain_forward = model.forward


def counted(*a, **kw):
    global forwards
    forwards += 1
    return plain_forward(*a, **kw)


model.forward = counted
print(f"{bb.name} in {str(bb.dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads; "
      f"{len(queries)} squad-rag prompts, 64 new tokens, greedy, batch 1")
rows = []
for i, (qid, question) in enumerate(queries):
    docs = [gold[qid]] + [doc_ids[(i * 37 + j * 101) % len(doc_ids)] for j in (1, 2)]
    hits = [Hit(rank=r + 1, score=1.0, doc_id=d, chunk_id=r, text=corpus[d], metadata={}) for r, d in enumerate(docs)]
    ids, _ = gen.rag_prompt(question, hits, 64)
    row = dict(prompt_tokens=len(ids))
    for name, extra in (("plain", {}), ("lookup", {"prompt_lookup_num_tokens": 10})):
        kw = gen._generate_kwargs([ids], 64) | {"min_new_tokens": 64} | extra
        forwards = 0
        with torch.inference_mode():
            t = time.perf_counter()
            out = model.generate(**kw)[0, len(ids):].tolist()
        row |= {f"{name}_forwards": forwards, f"{name}_s": round(time.perf_counter() - t, 2), name: out}
    row["identical"] = row.pop("plain") == row.pop("lookup")
    rows.append(row)
    print(json.dumps(row))
ratio = [r["plain_forwards"] / r["lookup_forwards"] for r in rows]
print(f"forwards, plain / lookup: median {np.median(ratio):.2f}x, min {min(ratio):.2f}x, max {max(ratio):.2f}x; "
      f"token-identical answers: {sum(r['identical'] for r in rows)} of {len(rows)}")
