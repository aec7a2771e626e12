"""Data loaders: one per format, offline from ../shared/data (see its README), or from the hub by name.

Every retrieval-style set becomes a `RetrievalSet` (corpus, queries, qrels, optional per-query
exclusions) so that one search path and one metrics path serve all suites. Ids are strings throughout,
because trec_eval and TREC files compare ids as strings.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from unified_rag import io
from unified_rag.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("UNIFIED_RAG_DATA", ROOT.parent / "shared" / "data"))

BRIGHT_DOMAINS = ("biology", "earth-science", "economics", "psychology", "robotics", "stackoverflow",
                  "sustainable-living", "leetcode", "pony", "aops", "theoremqa-questions", "theoremqa-theorems")


def content_hash(obj) -> str:
    """Stable hash of JSON-able content: the data hash recorded in results and used by the cache."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class RetrievalSet:
    name: str
    corpus: dict[str, str]  # doc id -> the text every method sees
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    excluded: dict[str, set[str]] = field(default_factory=dict)  # ids a query must never return (BRIGHT)
    source: str = ""
    query_instruction: str | None = None  # the task's published instruction (TASK_INSTRUCTIONS), if any

    @cached_property
    def hash(self) -> str:
        return content_hash([self.corpus, self.queries, self.qrels, {q: sorted(s) for q, s in self.excluded.items()}])

    def subset(self, n_queries: int | None) -> RetrievalSet:
        """The first n judged queries, with the whole corpus (the corpus is what makes retrieval hard)."""
        if not n_queries or n_queries >= len(self.queries):
            return self
        keep = list(self.queries)[:n_queries]
        return RetrievalSet(f"{self.name}[:{n_queries}]", self.corpus, {q: self.queries[q] for q in keep},
                            {q: self.qrels[q] for q in keep if q in self.qrels},
                            {q: self.excluded[q] for q in keep if q in self.excluded}, self.source,
                            self.query_instruction)

    def sample_corpus(self, max_docs: int | None, seed: int = 0) -> RetrievalSet:
        """Every document judged for the kept queries, plus a seeded draw of the others up to max_docs:
        a smaller, harder-than-random corpus for quick comparisons (the scores are not the full-corpus ones)."""
        if not max_docs or max_docs >= len(self.corpus):
            return self
        import random

        judged = {d for rel in self.qrels.values() for d in rel if d in self.corpus}
        if len(judged) > max_docs:
            raise InputError(f"max_docs={max_docs} is below the {len(judged)} judged documents")
        others = sorted(d for d in self.corpus if d not in judged)
        keep = judged | set(random.Random(seed).sample(others, max_docs - len(judged)))
        corpus = {d: t for d, t in self.corpus.items() if d in keep}
        return RetrievalSet(f"{self.name}[{max_docs} docs]", corpus, self.queries, self.qrels, self.excluded, self.source,
                            self.query_instruction)

    def describe(self) -> dict:
        d = dict(name=self.name, source=self.source, hash=self.hash, docs=len(self.corpus),
                 queries=len(self.queries), judgements=sum(len(v) for v in self.qrels.values()))
        return d | ({"query_instruction": self.query_instruction} if self.query_instruction else {})


# --- file readers -------------------------------------------------------------------------------------
def _need(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"data not found: {path} (offline data lives in ../shared/data; see its README)")
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return io.read_jsonl(_need(Path(path)))


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """BEIR tsv (query-id, corpus-id, score, with a header) or TREC (qid, iter, docid, rel)."""
    qrels: dict[str, dict[str, int]] = {}
    for line in _need(Path(path)).read_text().splitlines():
        parts = line.split("\t") if "\t" in line else line.split()  # doc ids may hold spaces
        if not parts or parts[0] == "query-id":
            continue
        if len(parts) not in (3, 4):
            raise InputError(f"{path}: a qrels line needs 3 (BEIR) or 4 (TREC) fields, got {line!r}")
        q, d, rel = (parts[0], parts[1], parts[2]) if len(parts) == 3 else (parts[0], parts[2], parts[3])
        if int(rel) > 0:  # zero judgements mean "judged not relevant": not a target
            qrels.setdefault(q, {})[d] = int(rel)
    return qrels


def beir_doc_text(doc: dict) -> str:
    """Title and text joined as BEIR/MTEB do, so figures compare with the published ones."""
    return f"{doc.get('title') or ''} {doc.get('text') or ''}".strip()


# --- BEIR (SciFact) -----------------------------------------------------------------------------------
# Query instructions as published for instruction-following embedders (the E5-mistral / LLM2Vec
# evaluation protocol on MTEB). Fixed a priori per task, never tuned on its scores. Backbone
# embedders put it before each query; embedders that take no instruction (MiniLM, BM25) ignore it.
TASK_INSTRUCTIONS = {
    "scifact": "Given a scientific claim, retrieve documents that support or refute the claim",
}


def load_beir(data: str | os.PathLike | None = None, *, hf: str | None = None, split: str = "test") -> RetrievalSet:
    """A BEIR-layout dir (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), or a hub name like BeIR/scifact."""
    if hf:
        return _beir_from_hub(hf, split)
    root = Path(data) if data else DATA / "scifact"
    corpus = {str(d["_id"]): beir_doc_text(d) for d in read_jsonl(root / "corpus.jsonl")}
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(root / "queries.jsonl") if str(q["_id"]) in qrels}
    return RetrievalSet(root.name, corpus, queries, {q: qrels[q] for q in queries}, source=str(root),
                        query_instruction=TASK_INSTRUCTIONS.get(root.name.lower()))


def _hub(name: str, *args, **kw):
    try:
        from datasets import load_dataset

        return load_dataset(name, *args, **kw)
    except ImportError:
        raise InputError("loading from the hub needs `pip install datasets`") from None
    except Exception as e:  # offline, unknown name, no such config: one line, not a traceback
        raise InputError(f"could not load {name!r} from the hub: {str(e).splitlines()[0]}") from None


def _beir_from_hub(name: str, split: str) -> RetrievalSet:
    corpus = {str(d["_id"]): beir_doc_text(d) for d in _hub(name, "corpus", split="corpus")}
    qrels: dict[str, dict[str, int]] = {}
    for r in _hub(f"{name}-qrels", split=split):
        if int(r["score"]) > 0:
            qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
    queries = {str(q["_id"]): q["text"] for q in _hub(name, "queries", split="queries") if str(q["_id"]) in qrels}
    short = name.split("/")[-1]
    return RetrievalSet(short, corpus, queries, {q: qrels[q] for q in queries}, source=f"hub:{name}",
                        query_instruction=TASK_INSTRUCTIONS.get(short.lower()))


# --- STS Benchmark ------------------------------------------------------------------------------------
def load_stsb(data: str | os.PathLike | None = None, *, hf: str | None = None,
              split: str = "test") -> tuple[list[tuple[str, str]], list[float], str]:
    """(sentence pairs, gold scores, data hash). Files: the first 7 tab fields, quoting off (README)."""
    if hf:
        rows = _hub(hf, split=split)
        pairs, scores = [(r["sentence1"], r["sentence2"]) for r in rows], [float(r["score"]) for r in rows]
    else:
        path = _need((Path(data) if data else DATA / "stsb") / f"sts-{split}.csv")
        pairs, scores = [], []
        with path.open(encoding="utf-8") as f:
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                if len(row) < 7:
                    raise InputError(f"{path}: a line has {len(row)} fields, STS-B needs 7")
                scores.append(float(row[4]))
                pairs.append((row[5], row[6]))
    return pairs, scores, content_hash([pairs, scores])


# --- AdvBench-IR --------------------------------------------------------------------------------------
@dataclass
class AdvBench:
    queries: dict[str, str]  # query id -> harmful instruction
    chunks: dict[str, str]  # chunk id -> "title # passage" (the LLM2Vec-Gen eval's passage format)
    own: dict[str, dict[str, int]]  # query id -> its own chunks

    @cached_property
    def hash(self) -> str:
        return content_hash([self.queries, self.chunks, self.own])


def load_advbench(data: str | os.PathLike | None = None, *, hf: str | None = None) -> AdvBench:
    if hf:
        return _advbench_from_hub(hf)
    root = Path(data) if data else DATA / "advbench-ir"
    queries = {str(r["id_"]): r["instruction"] for r in read_jsonl(root / "advbench-ir.jsonl")}
    chunks = {}
    for r in read_jsonl(root / "advbench-ir_chunked.jsonl"):
        body = r["response"][0] if isinstance(r["response"], list) else r["response"]
        chunks[f"harm-{r['id_']}"] = f"{r['title']} # {body}"
    mapping = json.loads(_need(root / "advbench-ir_to_chunked_map.json").read_text())
    own = {str(q): {f"harm-{c}": 1 for c in cs} for q, cs in mapping.items()}
    if set(own) != set(queries) or any(c not in chunks for cs in own.values() for c in cs):
        raise InputError(f"{root}: the chunk map does not match the queries and chunks")
    return AdvBench(queries, chunks, own)


def _advbench_from_hub(name: str, words: int = 100) -> AdvBench:
    """The hub release holds whole passages: chunk them as advbenchir_eval.py does (100-word windows,
    keeping a short tail only when it is the first window)."""
    queries, chunks, own = {}, {}, {}
    for r in _hub(name, split="train"):
        q = str(r["ID"])
        queries[q] = r["query"]
        tokens = r["document"].split()
        for j, start in enumerate(range(0, len(tokens), words)):
            window = tokens[start:start + words]
            if len(window) == words or start == 0:
                cid = f"harm-{q}-{j}"
                chunks[cid] = f"{r['title']} # {' '.join(window)}"
                own.setdefault(q, {})[cid] = 1
    return AdvBench(queries, chunks, own)


def load_distractors(spec: str | os.PathLike | None = None, *, limit: int | None = None) -> tuple[dict[str, str], str]:
    """Benign passages mixed into the AdvBench-IR corpus: a BEIR dir or corpus file (.jsonl[.gz]), 'none',
    or a hub name (the paper's McGill-NLP/AdvBench-IR-Small-Wiki-100). The default is the offline
    general-domain set (18,540 Wikipedia paragraphs and news stories, never trained on): like the
    paper's Wikipedia sample, it holds text a harmful query could plausibly match. Returns (docs, label)."""
    spec = str(spec) if spec else str(DATA / "distractors" / "general-domain.jsonl.gz")
    if spec == "none":
        return {}, "none"
    if Path(spec).is_dir():
        docs = {f"dist-{d['_id']}": beir_doc_text(d) for d in read_jsonl(Path(spec) / "corpus.jsonl")}
    elif Path(spec).is_file():
        docs = {f"dist-{d['_id']}": beir_doc_text(d) for d in read_jsonl(spec)}
    else:
        docs = {f"dist-{r['ID']}": f"{r['title']} # {r['passage']}" for r in _hub(spec, split="train")}
    if limit:
        docs = dict(list(docs.items())[:limit])
    return docs, f"{spec}" + (f" (first {limit})" if limit else "")


# --- TheoremQA (offline stand-in for BRIGHT) ---------------------------------------------------------
def load_theoremqa(data: str | os.PathLike | None = None) -> RetrievalSet:
    """Question -> the theorem it names. Questions that need a picture are left out (README)."""
    root = Path(data) if data else DATA / "theoremqa"
    theorems = json.loads(_need(root / "all_theorems.json").read_text())
    by_name = {n.strip().lower(): f"t{i}" for i, n in enumerate(theorems)}
    corpus = {f"t{i}": f"{n}: {d}" for i, (n, d) in enumerate(theorems.items())}
    queries, qrels, missing = {}, {}, []
    for q in json.loads(_need(root / "theoremqa_test.json").read_text()):
        if q.get("Picture") not in (None, "None"):
            continue
        doc = by_name.get(q["theorem"].strip().lower())
        if doc is None:
            missing.append(q["theorem"])
            continue
        queries[q["id"]], qrels[q["id"]] = q["Question"], {doc: 1}
    if missing:
        raise InputError(f"{root}: {len(missing)} questions name unknown theorems, e.g. {missing[:3]}")
    return RetrievalSet("theoremqa", corpus, queries, qrels, source=str(root))


# --- BRIGHT ------------------------------------------------------------------------------------------
def _id_list(value) -> list[str]:
    """The topics files store id lists as Python-literal strings; 'N/A' means none."""
    ids = ast.literal_eval(value) if isinstance(value, str) else list(value or [])
    return [str(i) for i in ids if str(i) != "N/A"]


def load_bright(domain: str, corpus: str | os.PathLike | None = None, *, topics: str | os.PathLike | None = None,
                fixed: bool = True, hf: str | None = None) -> RetrievalSet:
    """Queries and qrels from the Anserini topic files; documents from a local dir holding
    `<domain>.jsonl[.gz]` ({"id", "content"} as on the hub, or BEIR {"_id", "text"}), or from the hub
    (`hf="xlangai/BRIGHT"`, config 'documents'). `fixed` picks the corrected qrels where they exist."""
    if domain not in BRIGHT_DOMAINS:
        raise InputError(f"unknown BRIGHT domain {domain!r}; one of {', '.join(BRIGHT_DOMAINS)}")
    root = Path(topics) if topics else DATA / "bright-topics"
    rows = read_jsonl(root / f"topics.bright-{domain}-original.jsonl.gz")
    qfile = root / f"qrels.bright-{domain}.fixed.txt"
    qrels = read_qrels(qfile if fixed and qfile.exists() else root / f"qrels.bright-{domain}.txt")
    queries = {str(r["id"]): r["query"] for r in rows if str(r["id"]) in qrels}
    excluded = {str(r["id"]): set(_id_list(r["excluded_ids"])) for r in rows}
    if hf:
        docs = {str(d["id"]): d["content"] for d in _hub(hf, "documents", split=domain.replace("-", "_"))}
    elif corpus:
        cdir = Path(corpus)
        path = next((p for p in (cdir / f"{domain}.jsonl", cdir / f"{domain}.jsonl.gz", cdir / "corpus.jsonl",
                                 cdir) if p.is_file()), None)
        if path is None:
            raise InputError(f"no BRIGHT corpus for {domain} in {cdir}: expected {domain}.jsonl[.gz]")
        docs = {str(d.get("id", d.get("_id"))): d.get("content", d.get("text", "")) for d in read_jsonl(path)}
    else:
        raise InputError("the BRIGHT corpus is not in ../shared/data: pass a local corpus dir or the hub name")
    docs = {i: t for i, t in docs.items() if t and t.strip()}
    return RetrievalSet(f"bright-{domain}", docs, queries, {q: qrels[q] for q in queries},
                        {q: excluded[q] for q in queries if excluded.get(q)}, source=str(corpus or f"hub:{hf}"))


def scifact_texts(n_docs: int, n_queries: int = 0) -> tuple[list[str], list[str]]:
    """The first SciFact documents and queries, as plain texts (the speed suites' workload)."""
    ds = load_beir()
    return list(ds.corpus.values())[:n_docs], list(ds.queries.values())[:n_queries]
