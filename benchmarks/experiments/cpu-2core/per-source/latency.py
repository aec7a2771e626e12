"""Where per-source reading spends its time, against joint reading: 20 questions of the rc-train calibration
half (seed 1) through the default pipeline over its 329 paragraphs; mean seconds per question for
retrieval, reading (per-source: its one-source prefills; joint: building the prompt) and generation
(joint: its prefill and decoding; per-source: decoding from the kept KV), the prompt tokens read and
the tokens generated.
    python benchmarks/experiments/cpu-2core/per-source/latency.py
Measured with the three-run adapter (shipped then), which it loads from runs/answer-per-source/adapter
(restore its weights first: git show 05ae01e:unified_rag/assets/smollm2-135m-instruct/answer/adapter.safetensors
> runs/answer-per-source/adapter/adapter.safetensors).
"""
import json
import random
import time
from pathlib import Path

from benchmarks.rag_qa import rc_heldout_set
from unified_rag import UnifiedRAG
from unified_rag.retriever import _UNSET, DEFAULT_RETRIEVAL

qa = rc_heldout_set(half="calibration")
THREE_RUNS = Path(__file__).parents[4] / "runs/answer-per-source/adapter"
rag = UnifiedRAG.from_pretrained(generator_adapter=str(THREE_RUNS))
rag.add_documents(qa.documents())
g = rag.generator
qs = random.Random(1).sample(sorted(qa.questions), 20)
T = {"retrieve": 0, "read_ps": 0, "gen_ps": 0, "read_joint": 0, "gen_joint": 0}
ntok = {"ps": 0, "joint": 0, "ps_gen": 0, "joint_gen": 0}
for reading in ("per-source", "joint"):
    g.adapter.config.reading = reading
    g.adapter.config.decline_bias = 0.0 if reading == "per-source" else -0.75
    k = "ps" if reading == "per-source" else "joint"
    for q in qs:
        question = qa.questions[q]
        t = time.perf_counter()
        hits, _, _, prefix = rag._relevant(question, 5, DEFAULT_RETRIEVAL, _UNSET)
        T["retrieve"] += (time.perf_counter() - t) / 2  # retrieved once per reading
        if not hits:
            continue
        t = time.perf_counter()
        r = g.read(question, hits, 32, prefix)
        T["read_" + k] += time.perf_counter() - t
        ntok[k] += len(r.ids) if reading == "joint" else sum(len(g.rag_prompt(question, [h], 32)[0]) for h in hits)
        t = time.perf_counter()
        out = g.generate_ids(r.ids, 32, r.prefix)
        T["gen_" + k] += time.perf_counter() - t
        ntok[k + "_gen"] += len(g.backbone.tokenizer(out)["input_ids"])
result = dict(seconds={k: round(v / 20, 3) for k, v in T.items()}, tokens={k: v / 20 for k, v in ntok.items()},
              decode=g.config.decode)
print(result)
Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
