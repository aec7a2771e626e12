"""Do the two readings decline descriptive questions? Not a selection: a measurement of a question kind the
answer benchmarks (factoid, short gold answers) do not hold. Over the theorem demo corpus (TheoremQA's 354
theorem descriptions), each title is asked as "What does the <title> say?" through the default pipeline
(hybrid, k 5, relevance cut); only the first-step decline margin is computed (greedy declines exactly where
margin + bias > 0). Joint reading with its bias -0.75, per-source reading with its bias 0.0, and the
one-source prompt (the theorem's own description alone, where both readings build the same prompt).
120 titles drawn with seed 0 (about 4 s each on 2 cores); the whole corpus is indexed.
    python benchmarks/experiments/cpu-2core/descriptive/margins.py [ADAPTER_DIR [OUT_JSON]]
The defaults are the three-run adapter reading per source (results.json; restore its weights first with
`git show 05ae01e:unified_rag/assets/smollm2-135m-instruct/answer/adapter.safetensors >
runs/answer-per-source/adapter/adapter.safetensors`); per-source reading uses the adapter's own bias,
joint reading the three-run adapter's -0.75.
"""
import json
import random
import sys
from pathlib import Path

from tqdm import tqdm

from unified_rag import Document, UnifiedRAG

HERE = Path(__file__).parent
ROOT = HERE.parents[3]
ADAPTER = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "runs/answer-per-source/adapter")
OUT = HERE / (sys.argv[2] if len(sys.argv) > 2 else "results.json")
JOINT_BIAS = -0.75

rows = [json.loads(line) for line in (ROOT / "examples/theorems/theorems.jsonl").read_text().splitlines()]
rag = UnifiedRAG.from_pretrained(generator_adapter=ADAPTER)
rag.add_documents([Document(id=r["_id"], text=f"{r['title']}\n{r['text']}") for r in rows])
g, adapter = rag.generator, rag.generator.adapter
PER_SOURCE_BIAS = adapter.config.decline_bias
out = []
for r in tqdm(random.Random(0).sample(rows, 120), desc="questions"):
    q = f"What does the {r['title']} say?"
    hits = rag._relevant(q, 5, "hybrid", rag.min_relevance)[0]
    row = {"title": r["title"], "n_hits": len(hits), "gold_in_hits": any(h.doc_id == r["_id"] for h in hits)}
    if hits:
        adapter.config.reading = "joint"
        row["joint"] = g.decline_margin(g.read(q, hits, 48).ids)[0]
        adapter.config.reading = "per-source"
        row["per_source"] = g.read(q, hits, 48).margin
    gold = next((h for h in rag._relevant(q, 20, "hybrid", None)[0] if h.doc_id == r["_id"]), None)
    if gold is not None:
        row["one_source"] = g.decline_margin(g.rag_prompt(q, [gold.model_copy(update={"rank": 1})], 48)[0])[0]
    out.append(row)


def rate(key, bias, rows):
    m = [x[key] for x in rows if key in x]
    return {"n": len(m), "declines": sum(v + bias > 0 for v in m) / max(len(m), 1)}


summary = {"adapter": ADAPTER.removeprefix(str(ROOT) + "/"), "questions": len(out),
           "cut_declined": sum(not x["n_hits"] for x in out),
           f"pipeline_joint_at_{JOINT_BIAS}": rate("joint", JOINT_BIAS, out),
           f"pipeline_per_source_at_{PER_SOURCE_BIAS}": rate("per_source", PER_SOURCE_BIAS, out),
           f"one_source_at_{JOINT_BIAS}": rate("one_source", JOINT_BIAS, out),
           f"one_source_at_{PER_SOURCE_BIAS}": rate("one_source", PER_SOURCE_BIAS, out)}
print(json.dumps(summary, indent=1))
OUT.write_text(json.dumps({"summary": summary, "rows": out}, indent=1) + "\n")
