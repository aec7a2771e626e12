"""End-to-end RAG question answering, on squad-rag (SQuAD v1.1 dev questions over their Wikipedia
paragraphs) or rc-heldout (rc-train's held-out articles, which the answer adapter never saw).

One index of every paragraph, one seeded sample of questions, and each setting through the same
generator, with its answer adapter on and with the base model: closed-book (the question alone), RAG
(`UnifiedRAG.answer`, the default pipeline) and oracle (the gold paragraph as the only source), plus
RAG in extractive mode (the one source sentence nearest the question, no generation). A last set
asks questions whose gold paragraph has been deleted from the index: they should be declined.

Answers are scored with SQuAD v1.1's official normalisation (lowercase, no punctuation, no articles,
single spaces): exact match and token F1, each the best over the gold strings.
"""
from __future__ import annotations

import collections
import re
import string
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unified_rag.errors import InputError
from unified_rag.generator import cited_numbers
from unified_rag.grounding import strip_markers
from unified_rag.types import Document, Hit

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


@dataclass
class QASet:
    """Questions with gold answers over a corpus, each question's gold paragraph known."""
    name: str
    corpus: dict[str, str]
    questions: dict[str, str]
    answers: dict[str, list[str]]
    gold: dict[str, str]  # question id -> the id of its paragraph

    def documents(self) -> list[Document]:
        """The corpus as documents to index, ids kept (gold ids and deletions refer to them)."""
        return [Document(id=d, text=t) for d, t in self.corpus.items()]


def squad_rag_set(data=None) -> QASet:
    ds, answers = load_squad_rag(data)
    return QASet("squad-rag", ds.corpus, {q: ds.queries[q] for q in answers}, answers,
                 {q: next(iter(ds.qrels[q])) for q in answers})


def rc_heldout_set(data=None, half: str = "report", cfg=None) -> QASet:
    """The answerable questions of rc-train's held-out articles (never trained on: trainers/answer.py),
    over the paragraphs of those articles; the report half by default (the "calibration" half is where
    the decline bias is fitted). `cfg`: a run's AnswerTrainConfig, for its data files and held-out slice."""
    from trainers.answer import RC_FILES, AnswerTrainConfig, heldout_half, split_rows

    cfg = cfg or AnswerTrainConfig(data=[Path(data) / f for f in RC_FILES] if data else [])
    _, _, held = split_rows(cfg)
    held = [r for r in held if heldout_half(r["title"]) == half]
    corpus, ids = {}, {}
    for r in held:
        ids.setdefault(r["context"], f"p{len(ids)}")
        corpus[ids[r["context"]]] = r["context"]
    rows = [r for r in held if not r.get("is_impossible")]
    return QASet("rc-heldout" if half == "report" else f"rc-heldout-{half}", corpus, {r["id"]: r["question"] for r in rows},
                 {r["id"]: [a for a in r["answers"] if a.strip()] for r in rows}, {r["id"]: ids[r["context"]] for r in rows})


QA_SETS = {"squad-rag": squad_rag_set, "rc-heldout": rc_heldout_set}
SETTINGS = ("closed-book", "rag", "rag-extractive", "oracle", "gold-removed")


def holds_answer(text: str, golds: list[str]) -> bool:
    norm = normalize_answer(text)
    return any(g and g in norm for g in map(normalize_answer, golds))


def _row(text: str, golds: list[str], sources: list[Hit], cited: list[int], model_cited: list[int],
         declined: bool, seconds: float, gold_doc: str | None) -> dict:
    answer = strip_markers(text)  # the markers are citations, not words of the answer
    holds = [h.doc_id == gold_doc or holds_answer(h.text, golds) for h in sources]
    return dict(text=text, em=0.0 if declined else exact_match(answer, golds), f1=0.0 if declined else token_f1(answer, golds),
                contained=not declined and holds_answer(answer, golds), declined=declined, seconds=seconds,
                available=any(holds), model_cited=bool(model_cited),
                cited_ok=[holds[n - 1] for n in cited], source_cited=any(holds[n - 1] for n in cited),
                retrieved=gold_doc is not None and any(h.doc_id == gold_doc for h in sources))


def _score(rows: list[dict], setting: str) -> dict[str, float]:
    lat = [r["seconds"] for r in rows]
    said = [r for r in rows if not r["declined"]]
    out = dict(f1=float(np.mean([r["f1"] for r in rows])), exact_match=float(np.mean([r["em"] for r in rows])),
               contained=float(np.mean([r["contained"] for r in rows])),
               declined=float(np.mean([r["declined"] for r in rows])),
               latency_p50_s=float(np.percentile(lat, 50)), latency_p95_s=float(np.percentile(lat, 95)))
    if setting == "closed-book" or setting == "gold-removed":
        return out if setting == "closed-book" else {k: out[k] for k in ("declined", "latency_p50_s", "latency_p95_s")}
    # A rate over no rows is undefined: None (a blank in the report), never 0.0, which would read as "all wrong".
    available = [r for r in rows if r["available"]]
    out["false_decline"] = float(np.mean([r["declined"] for r in available])) if available else None
    out["model_citation_rate"] = float(np.mean([r["model_cited"] for r in said])) if said else None
    cited = [r for r in said if r["cited_ok"]]
    out["citation_precision"] = float(np.mean([np.mean(r["cited_ok"]) for r in cited])) if cited else None
    answered = [r for r in said if r["available"]]
    out["citation_recall"] = float(np.mean([r["source_cited"] for r in answered])) if answered else None
    if setting.startswith("rag"):
        out["recall@k"] = float(np.mean([r["retrieved"] for r in rows]))
    return out


def draw_questions(qa: QASet, n_questions: int, n_removed: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """A seeded sample of question ids; a second draw, disjoint, whose gold paragraphs no sampled
    question needs (they are deleted to ask it with its gold gone); and those paragraph ids."""
    rng = np.random.default_rng(seed)
    qids = sorted(qa.answers, key=lambda q: (len(q), q))
    pick = [qids[i] for i in rng.permutation(len(qids))]
    sample, held = pick[:n_questions], pick[n_questions:n_questions + n_removed]
    removed = sorted({qa.gold[q] for q in held} - {qa.gold[q] for q in sample})
    return sample, [q for q in held if qa.gold[q] in removed], removed


@contextmanager
def _generator(rag, tuned: bool):
    """The pipeline with its answer adapter on (tuned) or the base model generating, for the duration."""
    from unified_rag.generator import Generator

    kept = rag.generator
    if not tuned and kept.adapter is not None:
        rag.generator = Generator(rag.backbone, kept.config)
    try:
        yield rag.generator
    finally:
        rag.generator = kept


def run_rag_qa(rag, data=None, *, qa_set: str = "squad-rag", n_questions: int = 500, n_unanswerable: int = 100,
               k: int = 5, max_new_tokens: int = 32, mode: str = "hybrid", seed: int = 0, batch_size: int = 32,
               adapter: str = "both", settings=SETTINGS, n_base: int | None = None) -> dict:
    """Index the whole corpus into `rag` (which must be empty), then answer a seeded sample in each
    setting, with the answer adapter (`adapter` "on"), the base model ("off") or each in turn ("both").
    `n_base`: the base model answers only the first n_base questions of the sample (it writes every
    token of its budget, so it is the slow side; its rows say how many)."""
    if rag.store.count()[0]:
        raise InputError("rag-qa indexes its corpus itself: pass an empty UnifiedRAG")
    if qa_set not in QA_SETS:
        raise InputError(f"unknown rag-qa set {qa_set!r}: use one of {', '.join(QA_SETS)}")
    unknown = set(settings) - set(SETTINGS)
    if unknown or not settings:
        raise InputError(f"unknown settings {sorted(unknown)}: use {', '.join(SETTINGS)}")
    has_adapter = rag.generator.adapter is not None
    if adapter not in ("on", "off", "both"):
        raise InputError(f"adapter must be on, off or both, got {adapter!r}")
    if adapter == "on" and not has_adapter:
        raise InputError("adapter='on' but the pipeline has no answer adapter")
    variants = [v for v in (True, False) if (v and has_adapter and adapter != "off") or (not v and adapter != "on")]
    qa = QA_SETS[qa_set](data)
    sample, held, removed = draw_questions(qa, n_questions, n_unanswerable, seed)
    t0 = time.perf_counter()
    rag.add_documents(qa.documents(), batch_size=batch_size)
    index_s = time.perf_counter() - t0
    rows: dict[str, list[dict]] = {}
    generative = [s for s in settings if s not in ("rag-extractive", "gold-removed")]
    for tuned in variants:
        tag = "adapter" if tuned else "base"
        asked = sample if tuned or n_base is None else sample[:n_base]
        with _generator(rag, tuned) as g:
            for q in tqdm(asked, desc=f"rag-qa {qa.name} ({tag})", unit="question"):
                question, golds = qa.questions[q], qa.answers[q]
                for setting in generative:
                    t = time.perf_counter()
                    if setting == "rag":
                        ans = rag.answer(question, k=k, max_new_tokens=max_new_tokens, retrieval=mode)
                        model = [c.source for c in ans.citations if c.origin == "model"]
                        row = _row(ans.text, golds, ans.sources, ans.cited, model,
                                   not ans.answerable or is_refusal(ans.text), time.perf_counter() - t, qa.gold[q])
                    else:
                        hits = [] if setting == "closed-book" else [Hit(rank=1, score=1.0, text=qa.corpus[qa.gold[q]],
                                                                         doc_id=qa.gold[q], chunk_id=-1)]
                        ids, sources = g.rag_prompt(question, hits, max_new_tokens)
                        text = g.generate_ids(ids, max_new_tokens)
                        cited = cited_numbers(text, len(sources))
                        row = _row(text, golds, sources, cited, cited, g.declined(text) or is_refusal(text),
                                   time.perf_counter() - t, qa.gold[q])
                    rows.setdefault(f"{setting} ({tag})", []).append(row)
    if "rag-extractive" in settings:
        for q in tqdm(sample, desc=f"rag-qa {qa.name} (extractive)", unit="question"):
            t = time.perf_counter()
            ans = rag.answer(qa.questions[q], k=k, retrieval=mode, mode="extractive", max_sentences=1)
            rows.setdefault("rag-extractive", []).append(_row(ans.text, qa.answers[q], ans.sources, ans.cited, [],
                                                              not ans.answerable, time.perf_counter() - t, qa.gold[q]))
    # Gold removed: the same pipeline after the held-out questions' gold paragraphs are deleted.
    cut = {}
    if held and "gold-removed" in settings:
        rag.delete(removed)
        for tuned in variants:
            tag = "adapter" if tuned else "base"
            with _generator(rag, tuned):
                asked = held if tuned or n_base is None else held[:n_base]
                for q in tqdm(asked, desc=f"rag-qa gold removed ({tag})", unit="question"):
                    t = time.perf_counter()
                    ans = rag.answer(qa.questions[q], k=k, max_new_tokens=max_new_tokens, retrieval=mode)
                    rows.setdefault(f"gold-removed ({tag})", []).append(
                        _row(ans.text, qa.answers[q], ans.sources, ans.cited, [], not ans.answerable or is_refusal(ans.text),
                             time.perf_counter() - t, None))
                    cut[tag] = cut.get(tag, 0) + (not ans.sources)
    methods = {}
    for name, r in rows.items():
        methods[name] = dict(kind=name, metrics=_score(r, name.split(" (")[0]), n=len(r))
        if name.startswith("gold-removed"):
            methods[name]["metrics"]["declined_by_cut"] = cut.get(name.split("(")[1].rstrip(")"), 0) / len(r)
    notes = [f"{len(sample)} questions drawn with seed {seed} from {len(qa.answers)}; index of all {len(qa.corpus)} "
             f"paragraphs built in {index_s:.0f} s; k={k}, retrieval={mode}, max_new_tokens={max_new_tokens}, "
             f"relevance cut {rag.min_relevance}." + (f" The base model answered the first {n_base} of them." if n_base else ""),
             "(adapter): the generator with its answer adapter on; (base): the base model. oracle: the gold "
             "paragraph as the only source; closed-book: no source.",
             "Answers are scored without their [n] markers (SQuAD normalisation, best over the gold strings); a "
             "declined answer scores 0. contained: a gold answer occurs in the answer.",
             "declined: the adapter's decline sentence, the relevance cut's 'cannot answer', or a refusal the regex "
             "in benchmarks/rag_qa.py finds. false_decline: declines among questions whose sources hold a gold answer.",
             "model_citation_rate: answers that do not decline and carry a valid [n] the generator wrote itself. "
             "citation_precision: the share of an answer's cited sources that hold a gold answer (mean over answers "
             "with a citation); citation_recall: answers whose sources hold the answer and that cite such a source.",
             "gold-removed: questions whose gold paragraph was deleted from the index; declined is the share that "
             "decline, declined_by_cut the share the relevance cut declined before generation."]
    shown = sample[:min([5] + [len(r) for n, r in rows.items() if n.startswith("rag (")])]  # what answers look like
    samples = [dict(question=qa.questions[q], gold=qa.answers[q][0],
                    **{name: rows[name][i]["text"][:120] for name in rows if name.startswith("rag (")})
               for i, q in enumerate(shown)]
    info = rag.info()
    return dict(suite="rag-qa", title=f"End-to-end RAG QA: {qa.name} ({len(sample)} questions)",
                tables={"Sample answers": samples} if samples and any(n.startswith("rag (") for n in rows) else {},
                dataset=dict(set=qa.name, paragraphs=len(qa.corpus), questions=len(qa.answers), sample=len(sample),
                             gold_removed=len(held), removed=len(removed), seed=seed),
                main_metric="f1", methods=methods, notes=notes,
                config=dict(k=k, mode=mode, max_new_tokens=max_new_tokens, min_relevance=rag.min_relevance, n_base=n_base,
                            embedder=rag.embedder.kind, embedder_fingerprint=rag.embedder.fingerprint,
                            backbone=rag.backbone.name, **{k: info[k] for k in ("generator_adapter", "dtype")}))
