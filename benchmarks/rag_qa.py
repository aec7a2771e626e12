"""End-to-end RAG question answering (squad-rag: SQuAD v1.1 dev questions over their Wikipedia paragraphs).

One index of every paragraph, one seeded sample of questions, three settings through the same
generator: closed-book (the question alone), RAG (`UnifiedRAG.answer`, the default pipeline) and
oracle (the gold paragraph as the only source: this generator's ceiling), plus RAG in extractive mode
(the one source sentence nearest the question, no generation). A last set asks questions
whose gold paragraph has been deleted from the index, to measure how often the pipeline declines.

Answers are scored with SQuAD v1.1's official normalisation (lowercase, no punctuation, no articles,
single spaces): exact match and token F1, each the best over the gold strings.
"""
from __future__ import annotations

import collections
import re
import string
import time

import numpy as np
from tqdm.auto import tqdm

from unified_rag.errors import InputError
from unified_rag.types import Hit

from .data import DATA, load_beir, read_jsonl

# A reply that declines rather than answers: the system prompt asks for "say so" when the sources lack it.
REFUSAL = re.compile(r"\b(cannot|can't|can not|unable to) (answer|find|determine)|\b(do|does) not (contain|mention|"
                     r"provide|say|include)|\bno (information|mention)|\bnot (mentioned|provided|stated|given)|"
                     r"\bi don't know\b|\bi do not know\b", re.IGNORECASE)


def normalize_answer(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: list[str]) -> float:
    def f1(gold: str) -> float:
        p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
        common = sum((collections.Counter(p) & collections.Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(f1(g) for g in golds)


def is_refusal(text: str) -> bool:
    return bool(REFUSAL.search(text))


def load_squad_rag(data=None):
    """(RetrievalSet, {question id: [gold answer strings]})."""
    root = DATA / "squad-rag" if data is None else data
    ds = load_beir(root)
    answers = {str(r["_id"]): list(r["answers"]) for r in read_jsonl(f"{root}/answers.jsonl")}
    return ds, {q: answers[q] for q in ds.queries if answers.get(q)}


def _cites_gold(h: Hit, gold_doc: str, golds: list[str]) -> bool:
    text = normalize_answer(h.text)
    return h.doc_id == gold_doc or any(normalize_answer(g) and normalize_answer(g) in text for g in golds)


def _score(rows: list[dict]) -> dict[str, float]:
    lat = [r["seconds"] for r in rows]
    out = dict(exact_match=float(np.mean([r["em"] for r in rows])), f1=float(np.mean([r["f1"] for r in rows])),
               cannot_answer=float(np.mean([r["refused"] for r in rows])),
               latency_p50_s=float(np.percentile(lat, 50)), latency_p95_s=float(np.percentile(lat, 95)))
    if "cited" in rows[0]:
        cited = [r for r in rows if r["cited"]]
        out["citation_rate"] = len(cited) / len(rows)
        out["citation_rate_model"] = float(np.mean([r["cited_by_model"] for r in rows]))  # before attribution
        out["citation_precision"] = (float(np.mean([np.mean(r["cited_ok"]) for r in cited])) if cited else 0.0)
    if "retrieved" in rows[0]:
        out["recall@k"] = float(np.mean([r["retrieved"] for r in rows]))
    return out


def run_rag_qa(rag, data=None, *, n_questions: int = 500, n_unanswerable: int = 100, k: int = 5,
               max_new_tokens: int = 32, mode: str = "dense", seed: int = 0, batch_size: int = 32) -> dict:
    """Index the whole corpus into `rag` (which must be empty), then answer a seeded sample."""
    from unified_rag.types import Document

    if rag.store.count()[0]:
        raise InputError("rag-qa indexes the squad-rag corpus itself: pass an empty UnifiedRAG")
    ds, answers = load_squad_rag(data)
    rng = np.random.default_rng(seed)
    qids = sorted(answers, key=lambda q: int(q[1:]) if q[1:].isdigit() else q)
    pick = [qids[i] for i in rng.permutation(len(qids))]
    sample, held = pick[:n_questions], pick[n_questions:n_questions + n_unanswerable]
    gold = {q: next(iter(ds.qrels[q])) for q in sample + held}
    t0 = time.perf_counter()
    rag.add_documents([Document(id=d, text=t) for d, t in ds.corpus.items()], batch_size=batch_size)
    index_s = time.perf_counter() - t0
    g = rag.generator
    rows: dict[str, list[dict]] = {"closed-book": [], "rag": [], "rag-extractive": [], "oracle": []}
    for q in tqdm(sample, desc="rag-qa", unit="question"):
        question, golds = ds.queries[q], answers[q]
        for setting in rows:
            t = time.perf_counter()
            if setting.startswith("rag"):
                ans = rag.answer(question, k=k, max_new_tokens=max_new_tokens, retrieval=mode,
                                 mode="extractive" if setting == "rag-extractive" else "generative", max_sentences=1)
                text, sources = ans.text, ans.sources
            else:
                hits = [] if setting == "closed-book" else [Hit(rank=1, score=1.0, text=ds.corpus[gold[q]],
                                                                  doc_id=gold[q], chunk_id=-1)]
                ids, sources = g.rag_prompt(question, hits, max_new_tokens)
                text = g.generate_ids(ids, max_new_tokens)
            row = dict(em=exact_match(text, golds), f1=token_f1(text, golds), refused=is_refusal(text),
                       seconds=time.perf_counter() - t)
            if setting.startswith("rag"):
                row.update(cited=ans.cited, cited_ok=[_cites_gold(sources[n - 1], gold[q], golds) for n in ans.cited],
                           cited_by_model=any(c.origin == "model" for c in ans.citations),
                           retrieved=any(h.doc_id == gold[q] for h in sources), refused=not ans.answerable or row["refused"])
            rows[setting].append(row)
    # Unanswerable: the same pipeline after the held-out questions' gold paragraphs are deleted.
    removed = sorted({gold[q] for q in held} - {gold[q] for q in sample})
    held = [q for q in held if gold[q] in removed]
    if held:
        rag.delete(removed)
        for q in tqdm(held, desc="rag-qa unanswerable", unit="question"):
            t = time.perf_counter()
            ans = rag.answer(ds.queries[q], k=k, max_new_tokens=max_new_tokens, retrieval=mode)
            rows.setdefault("unanswerable", []).append(dict(em=exact_match(ans.text, answers[q]),
                                                            f1=token_f1(ans.text, answers[q]),
                                                            refused=not ans.answerable or is_refusal(ans.text),
                                                            seconds=time.perf_counter() - t))
    methods = {s: dict(kind=s, metrics=_score(r), n=len(r)) for s, r in rows.items()}
    f1 = {s: m["metrics"]["f1"] for s, m in methods.items()}
    notes = [f"{len(sample)} questions drawn with seed {seed} from {len(qids)}; index of all {len(ds.corpus)} "
             f"paragraphs built in {index_s:.0f} s; k={k}, retrieval={mode}, max_new_tokens={max_new_tokens}, "
             f"relevance cut {rag.min_relevance}.",
             "citation_rate: answers whose final text cites a valid [n]; citation_rate_model: answers where the "
             "generator wrote one itself (the rest were attributed by embedding).",
             f"RAG F1 is {f1['rag'] / f1['oracle']:.0%} of the oracle's" if f1.get("oracle") else "oracle F1 is 0",
             "unanswerable: questions whose gold paragraph was deleted from the index; 'cannot_answer' is the "
             "share of replies that decline (regex in benchmarks/rag_qa.py)."]
    return dict(suite="rag-qa", title=f"End-to-end RAG QA: squad-rag ({len(sample)} questions)",
                dataset=dict(ds.describe(), sample=len(sample), unanswerable=len(held), removed=len(removed), seed=seed),
                main_metric="f1", methods=methods, notes=notes,
                config=dict(k=k, mode=mode, max_new_tokens=max_new_tokens, min_relevance=rag.min_relevance,
                            embedder=rag.embedder.kind,
                            embedder_fingerprint=rag.embedder.fingerprint, backbone=rag.backbone.name))
