"""Exploration on rc-train's held-out calibration half (never the report half, never squad-rag):
does reading each retrieved source in its own prompt beat reading all five together?

For each sampled question, through the default pipeline (hybrid, k=5, relevance cut): the joint
prompt's greedy answer (what answer() does today, shipped bias), and per source its one-source
prompt's first-step decline margin; the per-source answer is the greedy answer of the source with
the lowest margin, its [1] renumbered to that source's rank. Then the same for questions whose gold
paragraph was deleted. Writes explore.json: token F1 of both readings (declines scored 0, no bias
applied to per-source), and every margin, for an ROC of min-margin vs the joint margin.

    python benchmarks/experiments/cpu-2core/per-source/explore.py [N]
"""
import json
import re
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from benchmarks.rag_qa import draw_questions, holds_answer, rc_heldout_set, token_f1
from trainers.config import AnswerTrainConfig
from unified_rag import UnifiedRAG
from unified_rag.grounding import strip_markers
from unified_rag.retriever import _UNSET
from unified_rag.types import Document

N = int(sys.argv[1]) if len(sys.argv) > 1 else 80
cfg = AnswerTrainConfig.from_file(Path("trainers/configs/answer-smollm2-continue2.json"))
qa = rc_heldout_set(half="calibration", cfg=cfg)
rag = UnifiedRAG.from_pretrained()
g, adapter = rag.generator, rag.generator.adapter
sample, gone, removed = draw_questions(qa, N, N // 3, seed=cfg.seed + 3)  # a draw the bias fit did not use
rag.add_documents([Document(id=d, text=t) for d, t in qa.corpus.items()])


def ask(q):
    question, golds = qa.questions[q], qa.answers[q]
    hits, _, _, prefix = rag._relevant(question, 5, "hybrid", _UNSET)
    if not hits:
        return None
    t = time.perf_counter()
    ids, used = g.rag_prompt(question, hits, 32, prefix)
    joint = g.generate_ids(ids, 32)
    t_joint = time.perf_counter() - t
    t = time.perf_counter()
    per = []
    for h in used:
        one, _ = g.rag_prompt(question, [h.model_copy(update={"rank": 1})], 32)
        per.append((g.decline_margin(one)[0], one))
    best = min(range(len(per)), key=lambda i: per[i][0])
    saved, adapter.config.decline_bias = adapter.config.decline_bias, 0.0
    text = g.generate_ids(per[best][1], 32)
    adapter.config.decline_bias = saved
    text = re.sub(r"\[1\]", f"[{best + 1}]", text)
    t_per = time.perf_counter() - t
    holds = [h.doc_id == qa.gold[q] or holds_answer(h.text, golds) for h in used]
    score = lambda s: 0.0 if g.declined(s) else token_f1(strip_markers(s), golds)
    return dict(q=q, holds=holds, joint=joint, joint_f1=score(joint), joint_declined=g.declined(joint),
                per=text, per_f1=score(text), per_declined=g.declined(text), margins=[m for m, _ in per], best=best,
                t_joint=t_joint, t_per=t_per)


rows = [r for q in tqdm(sample, desc="answerable") if (r := ask(q))]
rag.delete(removed)
free = [r for q in tqdm(gone, desc="gold deleted") if (r := ask(q))]
mean = lambda xs: sum(xs) / max(len(xs), 1)
summary = dict(n=len(rows), n_gold_deleted=len(free),
               joint_f1=mean([r["joint_f1"] for r in rows]), per_f1=mean([r["per_f1"] for r in rows]),
               joint_declined=mean([r["joint_declined"] for r in rows]), per_declined=mean([r["per_declined"] for r in rows]),
               joint_declined_gone=mean([r["joint_declined"] for r in free]), per_declined_gone=mean([r["per_declined"] for r in free]),
               per_picks_holding=mean([r["holds"][r["best"]] for r in rows if any(r["holds"])]),
               t_joint=mean([r["t_joint"] for r in rows]), t_per=mean([r["t_per"] for r in rows]))
print(json.dumps(summary, indent=1))
Path(__file__).with_suffix(".json").write_text(json.dumps(dict(summary=summary, rows=rows, gold_deleted=free), indent=1))
