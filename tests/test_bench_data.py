"""Loaders parse the real shared files with the counts in ../shared/data/README.md."""
import gzip
import json

import pytest

from benchmarks import data as D
from tests.conftest import need_data
from unified_rag.errors import InputError


def test_scifact_counts():
    need_data("scifact")
    ds = D.load_beir()
    assert (len(ds.corpus), len(ds.queries), sum(map(len, ds.qrels.values()))) == (5183, 300, 339)
    assert set(ds.qrels) == set(ds.queries)
    assert all(d in ds.corpus for q in ds.qrels.values() for d in q)
    assert ds.subset(20).hash != ds.hash and len(ds.subset(20).queries) == 20


def test_scifact_corpus_sample_keeps_every_judged_document():
    need_data("scifact")
    ds = D.load_beir()
    small = ds.sample_corpus(1500, seed=0)
    judged = {d for q in ds.qrels.values() for d in q}
    assert len(small.corpus) == 1500 and judged <= set(small.corpus) and small.queries == ds.queries
    assert small.hash == ds.sample_corpus(1500, seed=0).hash != ds.sample_corpus(1500, seed=1).hash
    with pytest.raises(InputError, match="judged"):
        ds.sample_corpus(100)


def test_stsb_counts_and_quoting():
    need_data("stsb")
    counts = {s: len(D.load_stsb(split=s)[0]) for s in ("train", "dev", "test")}
    assert counts == {"train": 5749, "dev": 1500, "test": 1379}
    pairs, scores, h = D.load_stsb()
    assert all(0 <= s <= 5 for s in scores) and all(a and b for a, b in pairs)
    assert any('"' in a + b for a, b in pairs)  # quoting off: quote characters stay in the text


def test_advbench_counts():
    need_data("advbench-ir")
    adv = D.load_advbench()
    assert (len(adv.queries), len(adv.chunks)) == (520, 1796)
    assert sorted(c for cs in adv.own.values() for c in cs) == sorted(adv.chunks)
    assert all(" # " in t for t in adv.chunks.values())


def test_theoremqa_counts():
    need_data("theoremqa")
    ds = D.load_theoremqa()
    raw = json.loads((D.DATA / "theoremqa" / "theoremqa_test.json").read_text())
    assert len(ds.corpus) == 354 and len(raw) == 800
    assert len(ds.queries) == sum(q["Picture"] in (None, "None") for q in raw) == 747


def _bright_corpus(tmp_path, domain):
    """A small BRIGHT-format corpus made from the real topics: gold docs, excluded docs, filler."""
    root = need_data("bright-topics")
    qrels = D.read_qrels(root / f"qrels.bright-{domain}.fixed.txt")
    rows = [json.loads(x) for x in gzip.open(root / f"topics.bright-{domain}-original.jsonl.gz", "rt")]
    docs = {d: f"gold document {d}" for q in qrels.values() for d in q}
    for r in rows:
        for d in D._id_list(r["excluded_ids"])[:3]:
            docs[d] = r["query"]  # the query's own text: the perfect match that must still be dropped
    docs.update({f"filler-{i}": f"unrelated filler text number {i}" for i in range(20)})
    path = tmp_path / f"{domain}.jsonl"
    path.write_text("".join(json.dumps({"id": i, "content": t}) + "\n" for i, t in docs.items()))
    return rows


def test_bright_loader_all_domains(tmp_path):
    total = 0
    for dom in D.BRIGHT_DOMAINS:
        rows = _bright_corpus(tmp_path, dom)
        ds = D.load_bright(dom, tmp_path)
        assert len(ds.queries) == len(rows) and set(ds.qrels) == set(ds.queries)
        total += len(ds.queries)
    assert total == 1384


def test_bright_excluded_ids_are_never_returned(tmp_path):
    from benchmarks.baselines import BM25
    from benchmarks.retrieval import search

    _bright_corpus(tmp_path, "leetcode")
    ds = D.load_bright("leetcode", tmp_path)
    assert ds.excluded
    run, _ = search(BM25(), ds.corpus, ds.queries, 10, excluded=ds.excluded)
    assert all(not set(run[q]) & ds.excluded.get(q, set()) for q in run)
    assert any(run[q] for q in ds.excluded)


def test_bad_input_is_typed(tmp_path):
    with pytest.raises(InputError):
        D.load_beir(tmp_path / "missing")
    with pytest.raises(InputError):
        D.load_bright("no-such-domain", tmp_path)
    with pytest.raises(InputError):
        D.load_bright("biology")  # no corpus offline
    (tmp_path / "q.tsv").write_text("query-id\tcorpus-id\tscore\n1\t2\n")
    with pytest.raises(InputError):
        D.read_qrels(tmp_path / "q.tsv")
