# Prompt A/B for the generator on a small squad-rag sample (output: log.txt beside this file). Run from the repo root.
import itertools, time, numpy as np
from unified_rag import UnifiedRAG, Document
from benchmarks.rag_qa import load_squad_rag, token_f1, exact_match, _cites_gold
ds, answers = load_squad_rag()
rng = np.random.default_rng(1)
allq = sorted(answers)
qids = [allq[i] for i in rng.permutation(len(allq))[:30]]
docs = {d for q in qids for d in ds.qrels[q]}
extra = list(itertools.islice((d for d in ds.corpus if d not in docs), 100))
rag = UnifiedRAG.from_pretrained()
rag.add_documents([Document(id=d, text=ds.corpus[d]) for d in list(docs) + extra], show_progress_bar=False)
A = rag.generator.config.system_prompt
B = ("Answer the question with a short phrase taken from the numbered sources, then the number of the source "
     "in square brackets, like: Paris [1]. If the sources do not contain the answer, say you cannot answer.")
C = ("Answer in as few words as possible, using only the numbered sources, and cite the source number in "
     "square brackets, like: 1542 [2]. If the sources do not contain the answer, say so.")
for name, p in [("A", A), ("B", B), ("C", C)]:
    rag.generator.config.system_prompt = p
    f1, em, cm, prec, t = [], [], [], [], time.time()
    for q in qids:
        a = rag.answer(ds.queries[q], k=3, max_new_tokens=32)
        g = next(iter(ds.qrels[q]))
        f1.append(token_f1(a.text, answers[q])); em.append(exact_match(a.text, answers[q]))
        cm.append(any(c.origin == "model" for c in a.citations))
        prec += [_cites_gold(a.sources[n - 1], g, answers[q]) for n in a.cited]
    print(name, f"F1 {np.mean(f1):.3f} EM {np.mean(em):.3f} model-cites {np.mean(cm):.2f} cite-prec {np.mean(prec):.2f} {time.time()-t:.0f}s", flush=True)
    print("   e.g.", repr(a.text))
