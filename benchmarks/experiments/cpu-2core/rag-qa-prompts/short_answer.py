"""Prototype: a short answer written by the generator from the extracted sentence(s)."""
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.rag_qa import load_squad_rag, token_f1
from unified_rag import UnifiedRAG
from unified_rag.types import Document
from unified_rag.grounding import _MARKER
N = int(sys.argv[1]) if len(sys.argv) > 1 else 60
ds, answers = load_squad_rag(None)
rng = np.random.default_rng(0)
qids = sorted(answers, key=lambda q: int(q[1:]) if q[1:].isdigit() else q)
pick = [qids[i] for i in rng.permutation(len(qids))][:N]
rag = UnifiedRAG.from_pretrained(dtype="bf16")
t = time.time()
rag.add_documents([Document(id=d, text=x) for d, x in ds.corpus.items()], show_progress_bar=False)
print("indexed", time.time() - t, flush=True)
g = rag.generator
tok = rag.backbone.tokenizer
SYS = {"copy": "You answer a question with a short phrase copied from the given text. Reply with the phrase only.",
       "plain": "Answer the question in a few words, using only the given text."}
res = {k: [] for k in ["extractive1", "copy1", "plain1", "copy2"]}
for q in pick:
    question, golds = ds.queries[q], answers[q]
    ans = rag.answer(question, k=5, mode="extractive", max_sentences=2)
    sents = [_MARKER.sub("", s).strip() for s in re.split(r"(?<=\])\s+", ans.text)] if ans.answerable else []
    res["extractive1"].append(token_f1(sents[0] if sents else ans.text, golds))
    for name, sysmsg, n in (("copy1", SYS["copy"], 1), ("plain1", SYS["plain"], 1), ("copy2", SYS["copy"], 2)):
        text = " ".join(sents[:n])
        msgs = [{"role": "system", "content": sysmsg}, {"role": "user", "content": f"Text: {text}\nQuestion: {question}\nShort answer:"}]
        ids = g._encode_chat(msgs)
        out = g.generate_ids(ids, 16).strip().split("\n")[0]
        res[name].append(token_f1(out, golds))
    if len(res["copy1"]) <= 5:
        print(question, "|", golds[:2], "|", sents[:1], "|", out, flush=True)
print(json.dumps({k: round(float(np.mean(v)), 4) for k, v in res.items()}))
