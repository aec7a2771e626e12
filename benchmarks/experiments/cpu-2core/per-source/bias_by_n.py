"""Would a decline bias per number of sources read help per-source reading? (The plan in
runs/answer-pipeline-calibration/PREREGISTRATION.md, last section; measured on the calibration half only,
nothing shipped.) For 200 calibration-half questions (seed 11), the shipped adapter's one-source decline
margins for the gold paragraph and for the 5 best hybrid neighbours that hold no gold answer. For n in
1..5, per-source reading over n sources declines on the lowest of n margins: answerable, the gold and
n - 1 neighbours; answer-free, n neighbours. The bias that keeps false declines within 15% with the
fewest missed ones (trainers/answer.py fit_decline_bias), and the errors of the shipped bias (0.0).
    python benchmarks/experiments/cpu-2core/per-source/bias_by_n.py
Measured with the three-run adapter (shipped then), which it loads from runs/answer-per-source/adapter
(restore its weights first: git show 05ae01e:unified_rag/assets/smollm2-135m-instruct/answer/adapter.safetensors
> runs/answer-per-source/adapter/adapter.safetensors).
"""
import json
from pathlib import Path

from tqdm import tqdm

from benchmarks.rag_qa import draw_questions, holds_answer, rc_heldout_set
from trainers.answer import fit_decline_bias
from unified_rag import UnifiedRAG
from unified_rag.types import Hit

qa = rc_heldout_set(half="calibration")
THREE_RUNS = Path(__file__).parents[4] / "runs/answer-per-source/adapter"
rag = UnifiedRAG.from_pretrained(generator_adapter=str(THREE_RUNS))
rag.add_documents(qa.documents())
g = rag.generator


def margin(question: str, text: str) -> float:
    hit = Hit(rank=1, score=0.0, text=text, doc_id="", chunk_id=0)
    return g.decline_margin(g.rag_prompt(question, [hit], 32)[0])[0]


rows = []
for q in tqdm(draw_questions(qa, 200, 0, seed=11)[0], desc="questions"):
    question, golds = qa.questions[q], qa.answers[q]
    free = [h.text for h in rag.retrieve(question, k=12)
            if h.doc_id != qa.gold[q] and not holds_answer(h.text, golds)][:5]
    if len(free) == 5:
        rows.append(dict(gold=margin(question, qa.corpus[qa.gold[q]]), free=[margin(question, t) for t in free]))

by_n = {}
for n in range(1, 6):
    margins = ([dict(answerable=True, margin=min([r["gold"]] + r["free"][:n - 1])) for r in rows]
               + [dict(answerable=False, margin=min(r["free"][:n])) for r in rows])
    bias, figures = fit_decline_bias(margins, max_false_decline=0.15)
    by_n[n] = dict(bias=bias, false_decline=figures["false_decline"], missed_decline=figures["missed_decline"],
                   false_decline_at_0=figures["false_decline_at_0"], missed_decline_at_0=figures["missed_decline_at_0"])
result = dict(questions=len(rows), by_n=by_n, rows=rows)
print(json.dumps(by_n, indent=1))
Path(__file__).with_name("bias_by_n.json").write_text(json.dumps(result, indent=1) + "\n")
