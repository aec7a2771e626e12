"""Integration tests on the real offline default, SmolLM2-135M-Instruct (loaded once per session)."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, need_data
from unified_rag import Answer, Document, UnifiedRAG

pytestmark = pytest.mark.integration
DEMO = ROOT / "examples" / "theorems" / "theorems.jsonl"


def _demo_docs(n=None):
    rows = [json.loads(line) for line in DEMO.read_text().splitlines()]
    return [Document(id=r["_id"], text=f"{r['title']}\n{r['text']}", source=str(DEMO)) for r in rows[:n]]


@pytest.fixture(scope="module")
def demo_rag(smol):
    rag = UnifiedRAG.from_pretrained(smol)
    rag.add_documents(_demo_docs(60))
    return rag


def test_default_backbone(smol):
    import torch

    from unified_rag.backbone import _cpu_has_fast_bf16

    assert smol.name == "smollm2-135m-instruct" and smol.hidden_size == 576
    assert smol.dtype == (torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32)
    assert smol.tokenizer.chat_template and smol.tokenizer.eos_token == "<|im_end|>"


def test_shipped_auto_adapter_leaves_generation_unchanged(smol):
    """`auto` on SmolLM2 is a LoRA adapter in the shared model, on only inside its own forward: the
    generator's logits and greedy text with the embedder built and used equal those before it."""
    import torch

    from embedders import AUTO_ADAPTER, load_embedder
    from unified_rag import Generator

    ids = smol.tokenizer("The Kraft inequality states that", return_tensors="pt").input_ids.to(smol.device)

    def logits():
        with torch.no_grad():
            return smol.model(input_ids=ids).logits.float()

    before, text = logits(), Generator(smol).complete("2 + 2 =", max_new_tokens=4)
    emb = load_embedder("auto", smol)
    assert emb.kind == "llm2vec" and AUTO_ADAPTER[smol.name].name == "llm2vec-supervised"
    emb.encode(["a prefix code", "entropy"])
    torch.testing.assert_close(logits(), before, rtol=0, atol=0)
    assert Generator(smol).complete("2 + 2 =", max_new_tokens=4) == text
    with emb.adapter_active():  # the adapter is real: switched on, it changes the model
        assert (logits() - before).abs().max() > 1e-2


def test_library_decoding_matches_generate_on_smollm2(smol):
    """The library's decode loop gives SmolLM2 the same greedy text as HF generate (in bf16 too: the
    decode benchmark found 32 of 32 squad-rag answers identical), and int8 weights still answer."""
    from unified_rag import Generator
    from unified_rag.generator import GenerationConfig

    prompt = "What is the capital of France? Answer in one sentence."
    hf = Generator(smol, GenerationConfig(decode="hf")).complete(prompt, max_new_tokens=24)
    assert Generator(smol).complete(prompt, max_new_tokens=24) == hf
    int8 = Generator(smol, GenerationConfig(int8_weights=True))
    assert "Paris" in int8.complete(prompt, max_new_tokens=24) and int8._int8.nbytes > 100 * 2**20


def test_one_copy_of_the_weights_and_memory():
    """The whole pipeline (index, answer, both LlamaIndex wrappers) in a fresh process shares one set of
    parameter storages, and its peak memory stays about one model below a control run whose generator
    holds a second copy: what is left above the loaded model is activations."""
    def run(layout):
        out = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "one_copy_memory.py"), str(DEMO),
                              layout], capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "MALLOC_ARENA_MAX": "2"})  # fewer arenas, steadier figures
        return json.loads(out.stdout.strip().splitlines()[-1])

    one, two = run("one"), run("two")
    assert one["same_storage"] and not two["same_storage"]
    # The peak is taken after a bf16 load (measured: activations ~233 MB here, a second copy +247 MB).
    assert one["peak_mb"] - one["loaded_mb"] < 1.5 * one["param_mb"], one
    # The control's second copy shows whole before any work runs. After the work, allocator caches of
    # about the same size blur it (CI once measured only +93 MB there), so the test compares before.
    assert two["held_mb"] - one["held_mb"] > 0.8 * one["param_mb"], (one, two)


def test_answer_with_numbered_sources(demo_rag):
    # A factoid question, what the shipped answer adapter was trained for; it declines most descriptive
    # ones ("What does the Kraft inequality say?": docs/guide.md, "What the adapter is for").
    q = "Who first introduced the Kraft inequality?"
    ans = demo_rag.answer(q, k=3, max_new_tokens=48)
    assert isinstance(ans, Answer) and ans.answerable and "Kraft" in ans.text, ans.text
    assert 1 <= len(ans.sources) <= 3 and [h.rank for h in ans.sources] == list(range(1, len(ans.sources) + 1))
    assert "Kraft inequality" in {h.doc_id for h in ans.sources}
    assert all(h.relevance >= (demo_rag.min_relevance or -1) for h in ans.sources)
    assert ans.cited and {c.sentence for c in ans.citations}  # written or attributed, every answer cites
    stream = demo_rag.stream_answer(q, k=3, max_new_tokens=48)
    streamed = "".join(stream).strip()
    assert stream.answer.text == ans.text and streamed  # greedy: the same text, grounded the same way


def test_out_of_domain_questions_get_cannot_answer(demo_rag, monkeypatch):
    """The shipped cut (relevance.json, calibrated on held-out training pairs) on the theorem demo:
    over all 354 theorems, measured best cosines were 0.70 for these in-domain questions and 0.14-0.22
    for these out-of-domain ones (fewer documents here can only lower them), against the cut of 0.347."""
    assert demo_rag.min_relevance is not None and 0.2 < demo_rag.min_relevance < 0.5
    for q in ("What is Huffman coding?", "What does the Kraft inequality say about prefix codes?"):
        ans = demo_rag.answer(q, k=3, max_new_tokens=8)  # past the cut; the model may still decline
        assert ans.sources and ans.sources[0].relevance > demo_rag.min_relevance + 0.1, (q, ans.sources)
    monkeypatch.setattr(demo_rag.generator, "generate_ids", lambda *a, **k: pytest.fail("generated without a source"))
    for q in ("Which city is the capital of Australia?", "How do I bake sourdough bread?",
              "Who wrote Pride and Prejudice?"):
        ans = demo_rag.answer(q, k=3)
        assert not ans.answerable and not ans.sources and "cannot answer" in ans.text, q


def test_query_longer_than_context_is_truncated_with_warning(demo_rag):
    with pytest.warns(UserWarning, match=r"the query is \d+ tokens long; only its first \d+ tokens were used"):
        hits = demo_rag.retrieve("entropy " * 9000, k=2)
    assert len(hits) == 2


def test_save_load_reproduces_retrieval(demo_rag, smol, tmp_path):
    demo_rag.save(tmp_path / "idx")
    back = UnifiedRAG.load(tmp_path / "idx", model=smol)
    q = "Which theorem bounds the information that processing can preserve?"
    assert [h.chunk_id for h in back.retrieve(q, 5)] == [h.chunk_id for h in demo_rag.retrieve(q, 5)]


def _scifact_subset(n_queries=100, n_distractors=400, seed=0):
    """The first 100 judged SciFact queries over their judged docs plus 400 others (fixed seed)."""
    from benchmarks.data import load_beir

    ds = load_beir(need_data("scifact"))
    qids = sorted(ds.queries)[:n_queries]
    judged = sorted({d for q in qids for d in ds.qrels[q]})
    others = random.Random(seed).sample(sorted(set(ds.corpus) - set(judged)), n_distractors)
    return ({q: ds.queries[q] for q in qids}, {q: ds.qrels[q] for q in qids},
            {d: ds.corpus[d] for d in judged + others})


def _ndcg10(rag, queries, qrels):
    from benchmarks.metrics import evaluate

    run = {}
    for qid, text in queries.items():
        scores: dict[str, float] = {}
        for h in rag.retrieve(text, k=30):  # chunks -> documents: a document scores by its best chunk
            scores[h.doc_id] = max(scores.get(h.doc_id, -1e9), h.score)
        run[qid] = scores
    return evaluate(qrels, run, "ndcg@10")["ndcg@10"]


def test_scifact_subset_quality_floor(smol):
    """The default (embedder="auto") on a SciFact subset, against a floor from a measured run
    (README: Results). Untrained raw mean pooling scores far below it."""
    queries, qrels, corpus = _scifact_subset()
    rag = UnifiedRAG.from_pretrained(smol)
    rag.add_documents([Document(id=d, text=t) for d, t in corpus.items()], batch_size=32)
    ndcg = _ndcg10(rag, queries, qrels)
    print(f"SciFact-100q/{len(corpus)}d nDCG@10 auto={ndcg:.3f}")
    assert ndcg >= SCIFACT_FLOOR


# Measured 0.703 with the shipped LoRA default (2-core CPU, dtype auto); the standardised mean pooling
# it replaced scored 0.552 here, raw mean pooling ~0.2. The margin covers bf16 against float32.
SCIFACT_FLOOR = 0.65


def test_llama_index_query_engine(smol):
    from llama_index.core import Document as LIDocument
    from llama_index.core import VectorStoreIndex

    from unified_rag.integrations.llama_index import UnifiedRAGEmbedding, UnifiedRAGLLM

    embed, llm = UnifiedRAGEmbedding.from_rag(smol), UnifiedRAGLLM.from_rag(smol, max_new_tokens=32)
    assert embed._embedder.backbone is llm._generator.backbone is smol
    docs = [LIDocument(text=d.text, doc_id=d.id) for d in _demo_docs(12)]
    index = VectorStoreIndex.from_documents(docs, embed_model=embed)
    response = index.as_query_engine(llm=llm, similarity_top_k=2).query("What is the Kraft inequality?")
    assert str(response).strip()
    assert len(response.source_nodes) == 2
    assert "Kraft inequality" in {n.node.ref_doc_id for n in response.source_nodes}
    vec = np.array(embed.get_query_embedding("prefix codes"))
    assert vec.shape == (embed._embedder.dim,) and abs(np.linalg.norm(vec) - 1) < 1e-3


def test_cli_end_to_end(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for d in _demo_docs(8):
        (docs / f"{d.id.replace(' ', '_')}.txt").write_text(d.text)
    (docs / "junk.txt").write_bytes(b"\x00\xff binary")

    def cli(*args):
        # The installed console script of this interpreter's environment: what a user runs, found
        # without relying on PATH (make test runs .venv/bin/python without activating the venv).
        script = Path(sys.executable).parent / "unified-rag"
        return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path)

    r = cli("index", str(docs), "--out", "idx")
    assert r.returncode == 0, r.stderr
    assert "indexed 8 documents" in r.stdout and "junk.txt" in r.stderr
    r = cli("search", "idx", "Kraft inequality prefix codes", "-k", "3")
    assert r.returncode == 0 and "Kraft_inequality" in r.stdout
    r = cli("ask", "idx", "What is the Kraft inequality?", "--max-new-tokens", "16")
    assert r.returncode == 0 and "[1]" in r.stdout
    assert json.loads(cli("info", "idx").stdout)["n_documents"] == 8
    for bad in (("search", "nope", "q"), ("search", "idx", "q", "-k", "0"), ("index", "missing.txt", "--out", "x")):
        r = cli(*bad)
        assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr


def test_the_shipped_answer_adapter_answers_cites_and_declines(smol):
    """The default pipeline generates with the shipped answer adapter: a short answer that cites the
    source holding it, written by the model itself; a decline when no source holds the answer; and
    the embedder's vectors and the base model's generation untouched by it."""
    from unified_rag import Generator

    rag = UnifiedRAG.from_pretrained(smol)
    assert rag.generator.adapter is not None and rag.generator.adapter.config.lora_layers
    before = rag.embedder.encode(["Mars has two moons."])
    rag.add_texts(["The Seine is a river that flows through Paris before it reaches the English Channel.",
                   "Mars has two small moons, Phobos and Deimos, discovered by Asaph Hall in 1877.",
                   "The Great Wall of China was built over many centuries to protect against invasions."])
    ans = rag.answer("Who discovered the moons of Mars?", k=3, min_relevance=None, max_new_tokens=24)
    assert ans.answerable and "Hall" in ans.text, ans.text
    assert ans.citations and {c.origin for c in ans.citations} == {"model"}
    assert all("Mars" in ans.sources[n - 1].text for n in ans.cited), (ans.text, [h.text for h in ans.sources])
    no = rag.answer("Who wrote the novel Pride and Prejudice?", k=3, min_relevance=None, max_new_tokens=24)
    assert not no.answerable and no.sources and no.text.startswith("I cannot answer"), no.text
    assert np.array_equal(rag.embedder.encode(["Mars has two moons."]), before)
    base = Generator(smol).complete("2 + 2 =", max_new_tokens=4)
    with rag.generator.adapter.active():
        pass  # switching it on and off leaves nothing behind
    assert Generator(smol).complete("2 + 2 =", max_new_tokens=4) == base
