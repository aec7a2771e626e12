"""Published single-backbone models, loaded through the public API and compared with outputs that
their official packages recorded on tiny random checkpoints (tests/fixtures/published/*/build.py,
VERSIONS.txt, NOTES.md)."""
import json

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from unified_rag import InputError, UnifiedRAG

FIXTURES = ROOT / "tests" / "fixtures" / "published"


# --- GritLM (gritlm 1.0.2 on transformers 5.25) ---------------------------------------------------------
GRIT = FIXTURES / "gritlm"


@pytest.fixture(scope="module")
def grit():
    expected = json.loads((GRIT / "expected.json").read_text())
    rag = UnifiedRAG.from_pretrained(GRIT / "model", dtype="fp32", generator_adapter=None)  # embedder "auto"
    return rag, expected


def _shared_storage(rag) -> bool:
    """Embedder and generator read the same parameter storage: one copy of the weights."""
    mine = {p.data_ptr() for p in rag.embedder.backbone.model.parameters()}
    return rag.embedder.backbone is rag.generator.backbone and mine == {p.data_ptr() for p in rag.backbone.model.parameters()}


def test_gritlm_is_recognised_from_its_config_and_embeds_as_the_official_code(grit):
    rag, e = grit
    assert rag.embedder.kind == "gritlm"  # auto_map names GritLM's modeling file; that code is never run
    for form, instruction in (("document", ""), ("query", e["task"])):
        want = e["forms"][form]
        items = rag.embedder.tokenize(e["texts"], instruction)
        official_ids = [[t for t, m in zip(ids, mask) if m] for ids, mask in zip(want["input_ids"], want["attention_mask"])]
        assert [ids for ids, _, _ in items] == official_ids
        got = rag.embedder.encode(e["texts"], instruction=instruction)
        assert np.abs(got - np.array(want["embeddings"], dtype=np.float32)).max() <= 1e-4
        raw = rag.embedder.encode(e["texts"], instruction=instruction, normalize=False)
        assert np.abs(raw - np.array(want["embeddings_unnormalized"], dtype=np.float32)).max() <= 1e-4
        causal = np.array(want["causal_control_embeddings_attn_cccc"], dtype=np.float32)
        assert np.abs(got - causal).max() > 1e-2  # bidirectional for real: the causal run differs
    # encode_documents / encode_queries use the document form and the configured query task
    docs = rag.embedder.encode_documents(e["texts"])
    assert np.abs(docs - np.array(e["forms"]["document"]["embeddings"], dtype=np.float32)).max() <= 1e-4


def test_gritlm_generates_causally_on_the_same_weights(grit):
    rag, e = grit
    before = rag.embedder.encode(e["texts"][:2], instruction="")
    tok = rag.backbone.tokenizer
    for g in e["generation"]["results"]:
        rendered = tok.apply_chat_template([{"role": "user", "content": g["prompt"]}], tokenize=False,
                                           add_generation_prompt=True)
        assert rendered == g["prompt_string"]  # <s><|user|>\n{prompt}\n<|assistant|>\n
        ids = tok(rendered, add_special_tokens=False)["input_ids"]
        assert ids == g["prompt_ids"]
        out = rag.backbone.model.generate(torch.tensor([ids]), max_new_tokens=len(g["new_ids"]), do_sample=False)
        assert out[0].tolist() == g["output_ids"]
    assert np.array_equal(rag.embedder.encode(e["texts"][:2], instruction=""), before)  # unchanged after generating
    assert _shared_storage(rag)
    rag.add_texts(e["texts"])
    ans = rag.answer("What is Bitcoin?", k=1, max_new_tokens=4)
    assert len(ans.sources) == 1 and ans.sources[0].text in e["texts"]  # runs end to end (random weights: no meaning)


def test_gritlm_kv_reuse_does_not_apply(grit):
    """GritLM's paper reuses the embedding pass's KV for generation. Here the embedding pass is
    bidirectional, so its deeper keys and values are not the causal prompt's: reusing them would change
    the answer. The library's KV-reuse path stays off for this kind."""
    from embedders.adapters import additive_mask, bidirectional_allowed, positions

    rag, e = grit
    b = rag.backbone
    ids = torch.tensor([b.tokenizer("<|embed|>\n" + e["texts"][0])["input_ids"]])
    am = torch.ones_like(ids)
    _, bi = b.hidden_states(input_ids=ids, attention_mask=additive_mask(bidirectional_allowed(am), b.dtype),
                            position_ids=positions(am), return_cache=True)
    _, causal = b.hidden_states(input_ids=ids, attention_mask=am, return_cache=True)
    assert torch.equal(bi.layers[0].keys, causal.layers[0].keys)  # the first layer reads embeddings only
    gap = (bi.layers[-1].values - causal.layers[-1].values).abs().max()
    assert gap > 0.1 * causal.layers[-1].values.abs().max()
    assert rag.embedder.reuses_kv is False


def test_gritlm_refuses_text_that_tokenizes_to_nothing(grit):
    rag, e = grit
    assert all(v is None for v in e["edge_cases"]["empty_text_document_instruction"]["embedding"])  # official: NaN
    with pytest.raises(InputError):
        rag.embedder.encode([""], instruction="")


# --- LLM2Vec (llm2vec 0.2.3 on transformers 4.44) --------------------------------------------------------
L2V = FIXTURES / "llm2vec"


@pytest.fixture(scope="module")
def l2v():
    expected = json.loads((L2V / "expected.json").read_text())
    mntp = UnifiedRAG.from_pretrained(L2V / "mntp", dtype="fp32", generator_adapter=None)  # embedder "auto"
    sup = UnifiedRAG.from_pretrained(mntp.backbone, embedder=L2V / "supervised", generator_adapter=None)
    return mntp, sup, expected


def test_llm2vec_releases_embed_as_the_official_code(l2v):
    mntp, sup, e = l2v
    assert mntp.embedder.kind == sup.embedder.kind == "llm2vec-official"
    assert mntp.embedder.config.lora_r == 0 and sup.embedder.config.lora_r == 4
    assert mntp.backbone.merged_adapter["path"].endswith("mntp")  # MNTP merged once, into the one copy
    assert mntp.embedder.config.template == "llama3"  # the release's base name picks the official template
    for sc in e["scenarios"]:
        emb = (sup if "supervised" in sc["adapters"] else mntp).embedder
        st = sc["settings"]
        saved = emb.config
        emb.config = saved.model_copy(update=dict(
            max_length=st["max_length"], doc_max_length=st["doc_max_length"], skip_instruction=st["skip_instruction"],
            template="llama3" if st["config_name_or_path"] == "meta-llama/Meta-Llama-3-8B-Instruct" else None))
        try:
            for it in sc["items"]:
                instruction, text = it["input"] if isinstance(it["input"], list) else ("", it["input"])
                (ids, n_head, n_text), = emb.tokenize([text], instruction)
                assert ids == it["input_ids"], (sc["name"], it["input"])
                if st["skip_instruction"]:
                    assert [0] * n_head + [1] * n_text == it["embed_mask"]
                got = emb.encode([text], instruction=instruction, normalize=False)[0]
                assert np.abs(got - np.array(it["embedding"], dtype=np.float32)).max() <= 1e-4, (sc["name"], it["input"])
        finally:
            emb.config = saved


def test_llm2vec_keeps_one_copy_and_the_supervised_adapter_only_inside_embedding(l2v):
    mntp, sup, e = l2v
    text = e["texts"][0] if "texts" in e else "How much protein should a female eat?"
    before = sup.embedder.encode([text], normalize=False)
    ids = torch.tensor([mntp.backbone.tokenizer("Hello", add_special_tokens=True)["input_ids"]])
    with torch.no_grad():
        base_logits = mntp.backbone.model(ids).logits
        sup.embedder.encode([text])  # the supervised LoRA was on only inside that call
        assert torch.equal(mntp.backbone.model(ids).logits, base_logits)
    assert np.array_equal(sup.embedder.encode([text], normalize=False), before)
    assert _shared_storage(mntp) and _shared_storage(sup) and sup.backbone is mntp.backbone
    sup.add_texts(["Protein needs depend on body weight.", "Paris is the capital of France."])
    assert len(sup.answer("How much protein?", k=1, max_new_tokens=4).sources) == 1


def test_published_layouts_with_a_missing_file_name_it(tmp_path):
    import shutil

    from unified_rag import ModelLoadError

    shutil.copytree(L2V, tmp_path / "l2v")
    (tmp_path / "l2v" / "supervised" / "adapter_model.safetensors").unlink()
    rag = UnifiedRAG.from_pretrained(tmp_path / "l2v" / "mntp", dtype="fp32", generator_adapter=None)
    with pytest.raises(ModelLoadError, match="adapter_model.safetensors"):
        UnifiedRAG.from_pretrained(rag.backbone, embedder=tmp_path / "l2v" / "supervised")
    (tmp_path / "l2v" / "mntp" / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="adapter_model.safetensors"):
        UnifiedRAG.from_pretrained(tmp_path / "l2v" / "mntp", dtype="fp32")


# --- LLM2Vec-Gen (llm2vec-gen 0.1.3 on transformers 4.56) -------------------------------------------------
GEN = FIXTURES / "llm2vec-gen"


@pytest.fixture(scope="module", params=["lora-tokens", "tokens-only"])
def gen(request):
    expected = json.loads((GEN / "expected.json").read_text())["checkpoints"][request.param]
    return UnifiedRAG.from_pretrained(GEN / request.param, dtype="fp32", generator_adapter=None), expected


def test_llm2vec_gen_checkpoints_encode_and_decode_as_the_official_code(gen):
    rag, e = gen
    emb = rag.embedder
    assert emb.kind == "llm2vec-gen-official" and emb.n_special == len(e["special_token_ids"])
    assert emb.config.lora_r == (8 if e["checkpoint"] == "lora-tokens" else 0)
    for it in e["encode_per_text"]:  # includes texts of 505 and 600 tokens: the specials survive truncation
        (ids, _, _), = emb.tokenize([it["text"]], None, warn=False)
        assert ids + e["special_token_ids"] == it["input_ids"]
        got = emb.encode([it["text"]], normalize=False, warn_truncation=False)[0]
        assert np.abs(got - np.array(it["embedding"], dtype=np.float32)).max() <= 1e-4
    first = emb.encode([e["encode_per_text"][0]["text"]], normalize=False)
    tok = rag.backbone.tokenizer
    for g in e["generate"]:  # greedy decoding of the reconstruction states by the plain base model
        r, _ = emb.special_states(emb.collate(emb.tokenize([g["source_text"]], None)))
        ids = rag.backbone.model.generate(inputs_embeds=r, attention_mask=torch.ones(r.shape[:2], dtype=torch.long),
                                          max_new_tokens=g["max_new_tokens"], do_sample=False, pad_token_id=tok.pad_token_id)
        assert ids[0].tolist() == g["output_ids"]
        assert emb.decode([g["source_text"]], max_new_tokens=g["max_new_tokens"]) == [g["output_text"].strip()]
    assert np.array_equal(emb.encode([e["encode_per_text"][0]["text"]], normalize=False), first)  # after generating
    assert _shared_storage(rag)
    n_embed = sum(p.numel() for p in rag.backbone.model.get_input_embeddings().parameters())
    assert n_embed == rag.backbone.model.config.vocab_size * rag.backbone.hidden_size  # the resized matrix not loaded
    rag.add_texts(["Montreal is a city in Canada.", "Polar bears live in the Arctic."])
    assert len(rag.answer("Is Montreal in Canada?", k=1, max_new_tokens=4).sources) == 1


def test_llm2vec_gen_refuses_pickles_and_names_missing_files(tmp_path):
    import shutil

    from unified_rag import ModelLoadError

    ck = tmp_path / "ck"
    shutil.copytree(GEN / "tokens-only", ck)
    shutil.copytree(GEN / "base", tmp_path / "base")  # run_config.yml's model_name_or_path is "base"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "config": ModelLoadError("not a weight")}, ck / "alignment_mlp")
    with pytest.raises(ModelLoadError, match="weights_only=True refused"):
        UnifiedRAG.from_pretrained(ck, dtype="fp32")
    (ck / "alignment_mlp").unlink()
    with pytest.raises(ModelLoadError, match="alignment_mlp is missing"):
        UnifiedRAG.from_pretrained(ck, dtype="fp32")


def test_the_cli_takes_published_adapter_dirs_and_hub_ids():
    from unified_rag.cli.checks import _check_embedder

    _check_embedder(str(L2V / "supervised"))  # a peft adapter_config.json, claimed by llm2vec-official at load
    _check_embedder("McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised")
    with pytest.raises(InputError, match="unknown embedder"):
        _check_embedder(str(L2V / "base"))  # a model, not an adapter
