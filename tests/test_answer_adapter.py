"""The generator's answer adapter: one copy of the weights, on only while generating, saved and
validated like the embedders' adapters; the answer path reads its markers and declines; its trainer
builds the examples answer() would see."""
import numpy as np
import pytest
import torch

from tests.conftest import CORPUS, make_tiny_rag
from unified_rag import MeanPoolEmbedder, UnifiedRAG
from unified_rag.answer_adapter import DECLINE_TEXT, AnswerAdapter, load_answer_adapter
from unified_rag.errors import InputError, ModelLoadError
from unified_rag.generator import GenerationConfig, Generator
from unified_rag.types import Hit


def _nudged(adapter: AnswerAdapter, seed: int = 1, scale: float = 0.5) -> AnswerAdapter:
    """LoRA B starts at zero (the adapter is then a no-op): give it weights that change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.shared_parameters().values():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return adapter


def _greedy(backbone, adapter=None, prompt="Paris is the capital of"):
    gen = Generator(backbone, GenerationConfig(max_new_tokens=8, decode="hf"), adapter=adapter)
    return gen.complete(prompt)


def test_embedder_vectors_and_base_generation_do_not_change(fresh_tiny_backbone):
    b = fresh_tiny_backbone
    emb = MeanPoolEmbedder(b)
    before_vec, before_text = emb.encode(CORPUS), _greedy(b)
    adapter = _nudged(AnswerAdapter(b, lora_r=4, lora_alpha=8))
    assert np.array_equal(emb.encode(CORPUS), before_vec)  # bit-identical with the adapter loaded
    assert _greedy(b) == before_text  # a generator without the adapter is the base model
    tuned = _greedy(b, adapter)
    assert tuned != before_text  # the adapter changes generation only where it is on ...
    assert np.array_equal(emb.encode(CORPUS), before_vec) and _greedy(b) == before_text  # ... and only there
    with adapter.active():
        inside = b.model(torch.tensor([[5, 6, 7]])).logits
    assert not torch.equal(inside, b.model(torch.tensor([[5, 6, 7]])).logits)


def test_lora_embedder_vectors_unchanged_by_the_answer_adapter(fresh_tiny_backbone):
    from embedders.llm2vec import LLM2VecEmbedder

    b = fresh_tiny_backbone
    emb = LLM2VecEmbedder(b, lora_r=4, lora_alpha=8)
    with torch.no_grad():
        for p in emb.lora_parameters().values():
            p.add_(0.1)
    before = emb.encode(CORPUS)
    _nudged(AnswerAdapter(b, lora_r=4, lora_alpha=8))
    assert np.array_equal(emb.encode(CORPUS), before)


def test_one_copy_of_the_weights_with_the_answer_adapter(fresh_tiny_backbone):
    b = fresh_tiny_backbone
    base = {n: p.data_ptr() for n, p in b.model.named_parameters()}
    rag = UnifiedRAG(b, MeanPoolEmbedder(b), generator_adapter=AnswerAdapter(b, lora_r=4))
    now = {n: p.data_ptr() for n, p in b.model.named_parameters()}
    lora = [n for n in now if "lora_" in n]
    assert lora and all("answer" in n for n in lora)
    # Every base tensor is the same storage as before; the only new tensors are the adapter's LoRA.
    renamed = {n.replace(".base_layer", ""): p for n, p in now.items() if "lora_" not in n}
    assert renamed == base
    assert rag.generator.backbone is rag.embedder.backbone is b
    with pytest.raises(ModelLoadError, match="another Backbone"):
        load_answer_adapter(rag.generator.adapter, make_other(b))


def make_other(b):
    from unified_rag import Backbone

    return Backbone(b.model, b.tokenizer, name="other")


def test_save_load_round_trip_and_validation(fresh_tiny_backbone, tmp_path):
    from safetensors.torch import load_file, save_file

    b = fresh_tiny_backbone
    a = _nudged(AnswerAdapter(b, lora_r=4, lora_alpha=8))
    text = _greedy(b, a)
    a.save_pretrained(tmp_path / "ans")
    b2 = make_other(b)  # the same model object: load writes into a new adapter slot
    loaded = AnswerAdapter.from_pretrained(tmp_path / "ans", backbone=b2)
    assert loaded.adapter_name != a.adapter_name and loaded.fingerprint != "" and _greedy(b2, loaded) == text
    # Bad files: a typed error that names what is wrong.
    state = load_file(tmp_path / "ans" / "adapter.safetensors")
    name = sorted(state)[0]
    bad = dict(state)
    bad[name] = torch.full_like(state[name], float("nan"))
    save_file(bad, tmp_path / "ans" / "adapter.safetensors")
    with pytest.raises(ModelLoadError, match="NaN"):
        AnswerAdapter.from_pretrained(tmp_path / "ans", backbone=b)
    bad[name] = torch.zeros(3, 3)
    save_file(bad, tmp_path / "ans" / "adapter.safetensors")
    with pytest.raises(ModelLoadError, match="shape"):
        AnswerAdapter.from_pretrained(tmp_path / "ans", backbone=b)
    (tmp_path / "ans" / "adapter.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="adapter.safetensors is missing"):
        AnswerAdapter.from_pretrained(tmp_path / "ans", backbone=b)
    (tmp_path / "ans" / "adapter.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="readable"):
        AnswerAdapter.from_pretrained(tmp_path / "ans", backbone=b)


def test_bf16_save_is_half_the_bytes(fresh_tiny_backbone, tmp_path):
    a = _nudged(AnswerAdapter(fresh_tiny_backbone, lora_r=4))
    full = a.save_pretrained(tmp_path / "f32") / "adapter.safetensors"
    half = a.save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16) / "adapter.safetensors"
    assert half.stat().st_size < 0.6 * full.stat().st_size


def test_declined_reads_the_decline_sentence(fresh_tiny_backbone):
    a = AnswerAdapter(fresh_tiny_backbone, lora_r=2)
    assert a.declined(DECLINE_TEXT) and a.declined("  " + DECLINE_TEXT.upper() + " Sorry.")
    assert a.declined(DECLINE_TEXT[:20])  # cut short by the token budget
    assert not a.declined("Paris [1].") and not a.declined("") and not a.declined("I")


def test_answer_path_with_the_adapter(fresh_tiny_backbone, monkeypatch):
    b = fresh_tiny_backbone
    rag = make_tiny_rag(b)
    rag.generator = Generator(b, rag.generator.config, adapter=AnswerAdapter(b, lora_r=2))
    assert rag.generator.repetition_penalty == 1.0  # the adapter copies words from its sources
    # What the model writes decides the Answer: its own markers (no attribution), or a decline.
    monkeypatch.setattr(Generator, "generate_ids", lambda self, ids, n=None, prefix=None: "Paris is the capital.")
    bare = rag.answer("What is the capital of France?", k=2, min_relevance=None)
    assert bare.answerable and bare.cited == [] and bare.citations == []
    monkeypatch.setattr(Generator, "generate_ids", lambda self, ids, n=None, prefix=None: "Paris [2].")
    ans = rag.answer("What is the capital of France?", k=2, min_relevance=None)
    assert ans.answerable and ans.cited == [2] and [c.origin for c in ans.citations] == ["model"]
    monkeypatch.setattr(Generator, "generate_ids", lambda self, ids, n=None, prefix=None: DECLINE_TEXT)
    no = rag.answer("What is the capital of France?", k=2, min_relevance=None)
    assert not no.answerable and no.text == DECLINE_TEXT and no.sources
    # Without the adapter, the base model's bare sentence gets a source by embedding, as before.
    rag.generator = Generator(b, rag.generator.config)
    assert rag.generator.repetition_penalty == 1.1
    monkeypatch.setattr(Generator, "generate_ids", lambda self, ids, n=None, prefix=None: "Paris is the capital.")
    base = rag.answer("What is the capital of France?", k=2, min_relevance=None)
    assert [c.origin for c in base.citations] == ["attributed"]
    monkeypatch.setattr(Generator, "generate_ids", lambda self, ids, n=None, prefix=None: DECLINE_TEXT)
    assert rag.answer("What is the capital of France?", k=2, min_relevance=None).answerable  # base: no decline reading


def test_from_pretrained_auto_and_none_on_a_backbone_without_a_shipped_adapter(tiny_backbone):
    assert UnifiedRAG.from_pretrained(tiny_backbone, embedder="mean").generator.adapter is None
    assert UnifiedRAG.from_pretrained(tiny_backbone, embedder="mean", generator_adapter=None).generator.adapter is None


# --- the trainer ---------------------------------------------------------------------------------------
def _rc_rows():
    rows = []
    for art in range(3):
        for p in range(3):
            ctx = f"Article {art} paragraph {p}: the code word of article {art} part {p} is w{art}{p}x."
            rows.append(dict(id=f"q{art}{p}", question=f"What is the code word of article {art} part {p}?",
                             context=ctx, answers=[f"w{art}{p}x"], title=f"A{art}", is_impossible=False))
    rows.append(dict(id="imp", question="What is the code word of article 9?", context=rows[0]["context"],
                     answers=[], title="A0", is_impossible=True))
    return rows


def test_examples_are_what_answer_sees(tiny_backbone):
    from trainers.answer import AnswerTrainConfig, Pool, example_rng, make_example

    rows = _rc_rows()
    pool, gen = Pool(rows), Generator(tiny_backbone)
    cfg = AnswerTrainConfig(min_sources=1, max_sources=4, decline_share=0.3, heldout_every=10**9)
    tok = tiny_backbone.tokenizer
    kinds = set()
    for r in rows * 4:
        x = make_example(r, pool, gen, cfg, example_rng(r, seed=len(kinds)))
        assert x == make_example(r, pool, gen, cfg, example_rng(r, seed=len(kinds)))  # a resume replays it
        target = tok.decode(x["target"])
        assert x["target"][-1] == tok.eos_token_id and 1 <= x["k"] <= 4
        prompt = tok.decode(x["prompt"])
        sources = [prompt.split(f"[{n}] ")[1].split("\n")[0] for n in range(1, x["k"] + 1)]
        if x["answerable"]:
            n = int(target.split("[")[1].split("]")[0])
            assert target.startswith(r["answers"][0]) and r["answers"][0] in sources[n - 1]
            assert sum(r["answers"][0] in s for s in sources) == 1  # the distractors hold no answer
        else:
            assert target.startswith(DECLINE_TEXT) and not any(a in s for a in r["answers"] for s in sources)
        assert r["is_impossible"] is False or not x["answerable"]
        kinds.add((x["answerable"], x["k"]))
        # Exactly the prompt answer() builds for these sources.
        hits = [Hit(rank=i + 1, score=0.0, text=s, doc_id=str(i), chunk_id=-1) for i, s in enumerate(sources)]
        assert gen.rag_prompt(r["question"], hits, cfg.max_new_tokens)[0] == x["prompt"]
    assert {a for a, _ in kinds} == {True, False} and len({k for _, k in kinds}) > 1


def test_one_source_decline_gets_the_closest_answer_free_paragraph(tiny_backbone):
    from trainers.answer import AnswerTrainConfig, Pool, example_rng, make_example

    rows = _rc_rows()
    pool, gen = Pool(rows), Generator(tiny_backbone)
    r = rows[4]  # article 1 part 1
    golds = [r["answers"][0].lower()]
    closest = next(int(i) for i in pool.bm25.search(r["question"], 20)[0]
                   if int(i) != pool.id_of[r["context"]] and not pool.holds(int(i), golds))
    same_article = set(pool.by_article["A1"]) - {pool.id_of[r["context"]]}
    for first, want in (("bm25", {closest}), ("same-article", same_article)):
        cfg = AnswerTrainConfig(min_sources=1, max_sources=1, decline_share=0.999, heldout_every=10**9,
                                distractor_first=first)
        seen = set()
        for seed in range(6):  # same-article picks at random; bm25 always the closest
            x = make_example(r, pool, gen, cfg, example_rng(r, seed=seed))
            seen.add(gen.backbone.tokenizer.decode(x["prompt"]).split("[1] ")[1].split("\n")[0])
            assert not x["answerable"] and x["k"] == 1
        assert seen == {pool.texts[i] for i in want}


def test_heldout_split_is_by_article_and_stable():
    from trainers.answer import is_heldout

    titles = [f"Title {i}" for i in range(2000)]
    held = [t for t in titles if is_heldout(t)]
    assert 20 <= len(held) <= 60 and held == [t for t in titles if is_heldout(t)]


def test_training_lowers_the_target_loss_and_saves_a_loadable_adapter(fresh_tiny_backbone, tmp_path):
    from trainers.answer import AnswerMethod, AnswerTrainConfig, Pool
    from trainers.loop import train

    b, rows = fresh_tiny_backbone, _rc_rows()
    cfg = AnswerTrainConfig(steps=12, batch_size=2, lr=5e-3, lora_r=4, lora_alpha=8, lora_dropout=0.0, save_every=6,
                            val_examples=3, max_sources=2, heldout_every=10**9, plot=False)
    torch.manual_seed(0)
    m = AnswerMethod(b, cfg, Pool(rows))
    before = m.validate(rows[-3:])
    log = train(m, cfg, tmp_path, rows)
    after = [r for r in log if "val_nll" in r][-1]
    assert after["val_nll"] < before["nll"]
    m.save_output(tmp_path / "adapter")
    loaded = AnswerAdapter.from_pretrained(tmp_path / "adapter", backbone=make_other(b))
    assert all(v.dtype == torch.float32 for v in loaded.shared_parameters().values())  # cast back on load
    assert (tmp_path / "checkpoints").is_dir()
    # A run continues from its bf16 adapter dir (init_from), as from a checkpoint, with a fresh optimizer.
    from trainers.checkpoint import warm_start

    other = AnswerMethod(make_other(b), cfg, Pool(rows))
    warm_start(other, tmp_path / "adapter")
    mine, theirs = m.trainable(), other.trainable()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].detach().to(torch.bfloat16).float(), theirs[k].detach()) for k in mine)
    # ... and the run's record hashes that adapter file, so a resume with another init is refused.
    from trainers.run_info import _data_files

    assert _data_files(cfg.model_copy(update={"init_from": tmp_path / "adapter"})) == [tmp_path / "adapter" / "adapter.safetensors"]


def test_rag_qa_scores_rows():
    from benchmarks.rag_qa import _row, _score

    src = [Hit(rank=1, score=1, text="Paris is the capital of France.", doc_id="g", chunk_id=0),
           Hit(rank=2, score=1, text="Berlin is in Germany.", doc_id="x", chunk_id=1)]
    right = _row("Paris [1].", ["Paris"], src, [1], [1], False, 0.5, "g")
    wrong_cite = _row("Paris [2].", ["Paris"], src, [2], [2], False, 0.7, "g")
    declined = _row(DECLINE_TEXT, ["Paris"], src, [], [], True, 0.2, "g")
    assert (right["em"], right["f1"], right["contained"]) == (1.0, 1.0, True)  # markers are not answer words
    assert declined["f1"] == 0.0 and declined["declined"]
    s = _score([right, wrong_cite, declined], "rag")
    assert s["citation_precision"] == pytest.approx(0.5) and s["citation_recall"] == pytest.approx(0.5)
    assert s["false_decline"] == pytest.approx(1 / 3) and s["model_citation_rate"] == 1.0
    assert s["f1"] == pytest.approx(2 / 3) and s["recall@k"] == 1.0


def test_rag_qa_with_and_without_the_adapter(fresh_tiny_backbone, tmp_path):
    from benchmarks.rag_qa import run_rag_qa
    from tests.test_bench_rag_qa import _squad_dir

    b = fresh_tiny_backbone
    rag = UnifiedRAG(b, MeanPoolEmbedder(b, query_instruction=None), generator_adapter=AnswerAdapter(b, lora_r=2))
    r = run_rag_qa(rag, _squad_dir(tmp_path), n_questions=3, n_unanswerable=6, k=2, max_new_tokens=3,
                   settings=("rag", "oracle", "gold-removed"), n_base=1)
    assert set(r["methods"]) == {f"{s} ({t})" for s in ("rag", "oracle", "gold-removed") for t in ("adapter", "base")}
    assert r["methods"]["rag (adapter)"]["n"] == 3 and r["methods"]["rag (base)"]["n"] == 1
    assert len(r["tables"]["Sample answers"]) == 1
    assert r["config"]["generator_adapter"] == rag.generator.adapter.fingerprint
    assert rag.generator.adapter is not None  # the base-model variant was only for its own rows
    gone = r["methods"]["gold-removed (adapter)"]["metrics"]
    assert gone["declined_by_cut"] <= gone["declined"]  # what the cut declines is declined


def test_decline_bias_moves_the_first_step_only_in_both_decoders(fresh_tiny_backbone):
    b = fresh_tiny_backbone
    a = _nudged(AnswerAdapter(b, lora_r=4, lora_alpha=8), scale=0.05)  # small: both decoders stay finite
    first = b.tokenizer(a.config.decline_text, add_special_tokens=False)["input_ids"][0]
    texts = {}
    for decode in ("auto", "hf"):
        for bias in (0.0, 1e4):
            a.config.decline_bias = bias
            gen = Generator(b, GenerationConfig(max_new_tokens=6, decode=decode), adapter=a)
            ids = gen.prompt_ids("Paris is the capital of")
            lean = gen._lean() if decode == "auto" else None
            if lean is not None:
                new = list(gen._lean_tokens(lean, ids, 6, None))
            else:
                with gen.weights():
                    new = gen.backbone.model.generate(**gen._single_kwargs(ids, 6, None))[0, len(ids):].tolist()
            texts[decode, bias] = new
    assert texts["auto", 0.0] == texts["hf", 0.0] and texts["auto", 1e4] == texts["hf", 1e4]
    assert texts["auto", 1e4][0] == first and texts["auto", 0.0][0] != first
    assert first not in texts["auto", 1e4][1:2] or texts["auto", 0.0][1:] != texts["auto", 1e4][1:]  # later steps unbiased
    a.config.decline_bias = 0.0


def test_fit_decline_bias_balances_both_error_kinds():
    from trainers.answer import fit_decline_bias, heldout_half

    ans = [dict(answerable=True, margin=m) for m in (-5, -4, -3, -2, 1.0)]  # one would decline at bias 0
    free = [dict(answerable=False, margin=m) for m in (-2.5, -1.5, -1.0, 0.5)]  # three would answer at bias 0
    bias, f = fit_decline_bias(ans + free)
    # Greedy declines where margin + bias > 0. At 0: 1 of 5 false declines, 3 of 4 missed (0.95 in all);
    # the best bias, 2.75 (between the margins -3 and -2.5), declines every answer-free one and 2 of 5
    # answerable ones (0.4 in all); no other bias does better.
    assert bias == pytest.approx(2.75)
    assert (f["false_decline"], f["missed_decline"]) == (pytest.approx(0.4), 0.0)
    assert (f["false_decline_at_0"], f["missed_decline_at_0"]) == (pytest.approx(0.2), pytest.approx(0.75))
    # With false declines held within 20%, the bias must stay below 2 (where the answerable -2 would
    # decline too); the fewest missed declines below it come at 1.75 (between -2 and -1.5): 1 of 4 missed.
    bias, f = fit_decline_bias(ans + free, max_false_decline=0.2)
    assert bias == pytest.approx(1.75) and f["false_decline"] == pytest.approx(0.2)
    assert f["missed_decline"] == pytest.approx(0.25)
    assert f["answerable"] == 5 and f["answer_free"] == 4
    halves = {heldout_half(f"Title {i}") for i in range(50)}
    assert halves == {"calibration", "report"}


def test_loading_the_same_adapter_again_reuses_it(fresh_tiny_backbone, tmp_path):
    b = fresh_tiny_backbone
    AnswerAdapter(b, lora_r=2).save_pretrained(tmp_path / "ans")
    first = load_answer_adapter(tmp_path / "ans", b)
    n = sum(p.numel() for p in b.model.parameters())
    assert load_answer_adapter(str(tmp_path / "ans"), b) is first  # no second injection
    assert sum(p.numel() for p in b.model.parameters()) == n


def test_pipeline_margins_are_the_pipelines_first_step(fresh_tiny_backbone, tmp_path):
    """Calibration on pipeline prompts: every asked question is either scored or declined by the cut;
    a question whose gold paragraph was deleted is answer-free (each test paragraph alone holds its
    number); and a margin is what greedy decoding of that very prompt decides on at its first step."""
    from benchmarks.rag_qa import draw_questions, squad_rag_set
    from tests.test_bench_rag_qa import _squad_dir
    from trainers.answer import pipeline_margins

    b = fresh_tiny_backbone
    adapter = _nudged(AnswerAdapter(b, lora_r=4, lora_alpha=8), scale=0.05)
    rag = UnifiedRAG(b, MeanPoolEmbedder(b, query_instruction=None), generator_adapter=adapter)
    qa = squad_rag_set(_squad_dir(tmp_path))
    sample, gone, removed = draw_questions(qa, 6, 2, seed=0)
    assert not set(sample) & set(gone) and {qa.gold[q] for q in gone} == set(removed)
    assert not set(removed) & {qa.gold[q] for q in sample}  # no sampled question loses its gold
    margins, drawn = pipeline_margins(rag, qa, n_rows=6, seed=0, k=2)
    assert drawn["asked"] == len(sample) + len(gone) == len(margins) + drawn["cut_declined"]
    assert [m["answerable"] for m in margins[-len(gone):]] == [False] * len(gone)
    assert all(not rag.store.has(d) for d in removed)
    with pytest.raises(InputError, match="empty"):
        pipeline_margins(rag, qa, n_rows=2, seed=0)
    # The last prompt again, decoded greedily with the bias just past its margin either way.
    q = gone[-1]
    hits, _, _, prefix = rag._relevant(qa.questions[q], 2, "hybrid", None)
    ids, _ = rag.generator.rag_prompt(qa.questions[q], hits, 32, prefix)
    first = b.tokenizer(adapter.config.decline_text, add_special_tokens=False)["input_ids"][0]
    for shift, declines in ((0.5, True), (-0.5, False)):
        adapter.config.decline_bias = -margins[-1]["margin"] + shift
        lean = rag.generator._lean()
        step = next(iter(rag.generator._lean_tokens(lean, ids, 1, None)))
        assert (step == first) is declines
    adapter.config.decline_bias = 0.0


def test_per_source_reading_reads_the_source_that_leans_least_to_declining(fresh_tiny_backbone):
    b = fresh_tiny_backbone
    a = _nudged(AnswerAdapter(b, lora_r=4, lora_alpha=8), scale=0.05)
    rag = UnifiedRAG(b, MeanPoolEmbedder(b, query_instruction=None), generator_adapter=a)
    rag.add_texts(CORPUS)
    q, g = "What is the capital of France?", rag.generator
    hits = rag.retrieve(q, k=3)
    joint = g.read(q, hits, 8)  # the default: every source in one prompt, as before
    assert (joint.ids, joint.source) == (g.rag_prompt(q, hits, 8)[0], None)
    a.config.reading = "per-source"
    r = g.read(q, hits, 8)
    margins = [g.decline_margin(g.rag_prompt(q, [h.model_copy(update={"rank": 1})], 8)[0])[0] for h in hits]
    assert r.source == 1 + int(np.argmin(margins)) and r.margin == pytest.approx(min(margins))
    assert [(h.rank, h.doc_id) for h in r.used] == [(i + 1, h.doc_id) for i, h in enumerate(hits)]
    # Generation continues from the kept KV exactly as it runs from scratch, in both decoders.
    assert len(r.prefix.ids) == len(r.ids) - 1
    assert g.generate_ids(r.ids, 6, r.prefix) == g.generate_ids(r.ids, 6)
    hf = Generator(b, GenerationConfig(decode="hf"), adapter=a)
    assert hf.generate_ids(r.ids, 6, r.prefix) == hf.generate_ids(r.ids, 6)
    # answer() and stream_answer() read the same source and agree.
    ans = rag.answer(q, k=3, max_new_tokens=6)
    stream = rag.stream_answer(q, k=3, max_new_tokens=6)
    assert "".join(stream).strip() == ans.text and stream.answer.text == ans.text
    assert [h.doc_id for h in stream.sources] == [h.doc_id for h in ans.sources] == [h.doc_id for h in hits]
    assert r.cite("Paris [1]. Seine [1, 2].") == f"Paris [{r.source}]. Seine [{r.source}]."
    a.config.reading = "joint"
    with pytest.raises(InputError, match="answer adapter"):
        Generator(b).decline_margin(r.ids)
