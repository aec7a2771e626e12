"""rag-qa: SQuAD's answer scoring, and the whole suite on the tiny model over a small squad-rag layout."""
import json

import pytest

from benchmarks.rag_qa import exact_match, is_refusal, normalize_answer, run_rag_qa, token_f1
from unified_rag import MeanPoolEmbedder, UnifiedRAG
from unified_rag.errors import InputError


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple and a pear") == "apple and pear"
    assert exact_match("the Denver Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    assert token_f1("Denver", ["Denver Broncos"]) == pytest.approx(2 / 3)  # p 1, r 1/2
    assert token_f1("Denver Broncos won", ["Broncos", "Denver Broncos"]) == pytest.approx(0.8)  # best gold
    assert token_f1("nothing shared", ["Denver"]) == 0.0


def test_refusals_are_recognised():
    assert is_refusal("The sources do not contain the answer.")
    assert is_refusal("I cannot answer that from the sources.")
    assert not is_refusal("Mars has two moons, Phobos and Deimos [1].")


def _squad_dir(tmp_path):
    paras = {f"p{i}": f"Paragraph {i} says that the secret number of item {i} is {100 + i}." for i in range(8)}
    root = tmp_path / "squad-rag"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                               for d, t in paras.items()))
    qs = {f"q{i}": (f"What is the secret number of item {i % 8}?", f"p{i % 8}", str(100 + i % 8)) for i in range(12)}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _, _) in qs.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"{q}\t{d}\t1\n" for q, (_, d, _) in qs.items()))
    (root / "answers.jsonl").write_text("".join(json.dumps({"_id": q, "answers": [a]}) + "\n"
                                                for q, (_, _, a) in qs.items()))
    return root


def test_suite_runs_end_to_end_on_the_tiny_model(tiny_backbone, tmp_path):
    rag = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone, query_instruction=None))
    r = run_rag_qa(rag, _squad_dir(tmp_path), n_questions=4, n_unanswerable=6, k=2, max_new_tokens=4)
    m = r["methods"]  # no answer adapter: the base model's rows only
    assert set(m) == {"closed-book (base)", "rag (base)", "oracle (base)", "rag-extractive", "gold-removed (base)"}
    assert m["rag (base)"]["n"] == 4 and r["config"]["mode"] == "hybrid" and r["config"]["dtype"] == "float32"
    for name in ("closed-book (base)", "rag (base)", "oracle (base)"):
        assert m[name]["metrics"]["f1"] >= m[name]["metrics"]["exact_match"]  # each row's F1 is 1 where EM is
        assert m[name]["metrics"]["latency_p50_s"] > 0
    assert {"model_citation_rate", "citation_precision", "citation_recall", "recall@k"} <= set(m["rag (base)"]["metrics"])
    assert "citation_precision" not in m["closed-book (base)"]["metrics"]
    ex = m["rag-extractive"]["metrics"]  # every quoted sentence carries its source number, none by the model
    assert ex["model_citation_rate"] == 0.0 and ex["recall@k"] == m["rag (base)"]["metrics"]["recall@k"]
    # Gold-removed questions count only where their gold paragraph was really removed from the index.
    assert m["gold-removed (base)"]["n"] >= 1 and rag.store.count()[0] == 8 - r["dataset"]["removed"]
    with pytest.raises(InputError, match="empty UnifiedRAG"):
        run_rag_qa(rag, tmp_path / "squad-rag", n_questions=1)
    with pytest.raises(InputError, match="no answer adapter"):
        run_rag_qa(UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone)), tmp_path / "squad-rag", adapter="on")
    with pytest.raises(InputError, match="unknown settings"):
        run_rag_qa(UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone)), tmp_path / "squad-rag", settings=["x"])


def test_a_rate_over_no_answers_is_blank_not_zero():
    """The base model's oracle answers cited nothing: its citation precision is undefined, not 0."""
    from benchmarks.rag_qa import _row, _score
    from unified_rag.types import Hit

    src = [Hit(rank=1, score=1.0, text="Paris is the capital of France.", doc_id="p1", chunk_id=0)]
    rows = [_row("Paris", ["Paris"], src, cited=[], model_cited=[], declined=False, seconds=0.1, gold_doc="p1")]
    m = _score(rows, "oracle")
    assert m["citation_precision"] is None and m["citation_recall"] == 0.0 and m["f1"] == 1.0
    cited = _score([_row("Paris [1]", ["Paris"], src, [1], [1], False, 0.1, "p1")], "oracle")
    assert cited["citation_precision"] == 1.0 and cited["model_citation_rate"] == 1.0
