"""The library's own batch-1 decode loop (unified_rag.decoding) against HF generate, and its int8 weights."""
import pytest
import torch

from unified_rag import InputError
from unified_rag.decoding import Int8Weights, LeanDecoder, supports
from unified_rag.generator import GenerationConfig, Generator

PROMPTS = ["What regulates blood glucose?", "Where is the capital of France?", "Name a theorem about triangles."]


def _hf_text(gen: Generator, ids: list[int], n: int) -> str:
    with torch.inference_mode():
        out = gen.backbone.model.generate(**gen._generate_kwargs([ids], n))
    return gen.backbone.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


@pytest.mark.parametrize("penalty", [1.0, 1.1])
def test_greedy_tokens_equal_generate(tiny_backbone, penalty):
    gen = Generator(tiny_backbone, GenerationConfig(repetition_penalty=penalty))
    assert gen._lean() is not None
    for p in PROMPTS:
        ids = gen.prompt_ids(p)
        assert gen.generate_ids(ids, 24) == _hf_text(gen, ids, 24)


def test_hf_decode_is_generate(tiny_backbone, monkeypatch):
    gen = Generator(tiny_backbone, GenerationConfig(decode="hf"))
    assert gen._lean() is None
    ids = gen.prompt_ids(PROMPTS[0])
    assert gen.generate_ids(ids, 12) == Generator(tiny_backbone).generate_ids(ids, 12)


def test_stream_joins_to_the_answer(tiny_backbone):
    gen = Generator(tiny_backbone)
    ids = gen.prompt_ids(PROMPTS[1])
    pieces = list(gen.stream_ids(ids, 24))
    assert len(pieces) > 1 and "".join(pieces).strip() == gen.generate_ids(ids, 24)


def test_eos_ends_the_answer_and_is_not_returned(tiny_backbone):
    gen = Generator(tiny_backbone)
    ids = gen.prompt_ids(PROMPTS[2])
    first = next(gen._lean_tokens(gen._lean(), ids, 1, None))
    tokens = list(LeanDecoder(tiny_backbone.model).tokens(ids, 8, eos=first))
    assert tokens == []  # the first pick is the stop token itself
    assert len(list(LeanDecoder(tiny_backbone.model).tokens(ids, 8, eos=None))) == 8


def test_sampling_follows_top_p_and_the_seed(tiny_backbone):
    ids = Generator(tiny_backbone).prompt_ids(PROMPTS[0])
    greedy = list(LeanDecoder(tiny_backbone.model).tokens(ids, 16))
    # top_p so small that only the likeliest token survives: sampling is greedy
    assert list(LeanDecoder(tiny_backbone.model).tokens(ids, 16, temperature=0.7, top_p=1e-6)) == greedy
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(list(LeanDecoder(tiny_backbone.model).tokens(ids, 16, temperature=1.5, top_p=1.0, top_k=0)))
    assert runs[0] == runs[1] != greedy


def test_lora_adapter_on_or_off_is_what_decoding_sees(fresh_tiny_backbone):
    """A peft-wrapped model: with the adapter on, the loop runs it; off, the base weights."""
    from peft import LoraConfig, inject_adapter_in_model

    model = fresh_tiny_backbone.model
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"],
                                       init_lora_weights=False), model, adapter_name="a")
    layers = [m for m in model.modules() if hasattr(m, "enable_adapters") and hasattr(m, "lora_A")]
    gen = Generator(fresh_tiny_backbone)
    ids = gen.prompt_ids(PROMPTS[0])
    texts = {}
    for on in (True, False):
        for m in layers:
            m.enable_adapters(on)
        texts[on] = gen.generate_ids(ids, 16)
        assert texts[on] == _hf_text(gen, ids, 16)
    assert texts[True] != texts[False]


def test_int8_linear_is_the_dequantized_weight_and_follows_changes():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48, bias=True)
    packs = Int8Weights()
    x = torch.randn(5, 64)
    with torch.inference_mode():
        q, scale = packs.linear(lin)(x), None
        pack = packs._packs[id(lin)]
        scale = pack[3]
        dequant = pack[2].float() * scale[:, None]
        torch.testing.assert_close(q, x @ dequant.T + lin.bias, rtol=1e-4, atol=1e-4)
        assert (dequant - lin.weight).abs().max() <= scale.max() / 2 + 1e-6  # rounding: half a step at most
        packs.linear(lin)
        assert packs._packs[id(lin)] is pack  # unchanged weight: the copy is kept
    assert packs.nbytes == 48 * 64 + 48 * 4
    with torch.no_grad():
        lin.weight.mul_(2)  # trained in place
    with torch.inference_mode():
        torch.testing.assert_close(packs.linear(lin)(x), 2 * (x @ dequant.T) + lin.bias, rtol=1e-3, atol=1e-3)


def test_int8_decoding_runs_and_stays_close(tiny_backbone):
    gen = Generator(tiny_backbone, GenerationConfig(int8_weights=True))
    ids = gen.prompt_ids(PROMPTS[0])
    assert isinstance(gen.generate_ids(ids, 16), str) and gen._int8.nbytes > 0
    n_linear = sum(1 for m in tiny_backbone.model.modules() if type(m) is torch.nn.Linear)
    assert len(gen._int8._packs) == n_linear  # every projection and the LM head
    for p in PROMPTS:
        ids = gen.prompt_ids(p)
        int8 = list(LeanDecoder(tiny_backbone.model, gen._int8).tokens(ids, 16))
        assert len(int8) == 16
        # Every int8 pick, not only the first, is one the full-precision model ranks (within rounding) at the
        # top of its own logits at that position, read in one teacher-forced forward over the int8 sequence.
        with torch.inference_mode():
            logits = tiny_backbone.model(input_ids=torch.tensor([ids + int8])).logits[0, len(ids) - 1:-1].float()
        gap = logits.max(-1).values - logits[torch.arange(16), torch.tensor(int8)]
        assert gap.max() <= 0.1 * logits.std(-1).min(), (p, gap)  # measured: 0 on all three prompts


def test_int8_decoding_of_a_bf16_model_attends_in_float32(fresh_tiny_backbone):
    """A bf16 model on CPU: the int8 loop keeps its cache in float32 (one-token steps attend in float32),
    starts like full precision, and continues a cached prefix as it continues a fresh prefill."""
    model = fresh_tiny_backbone.model.to(torch.bfloat16)
    ids = fresh_tiny_backbone.tokenizer(PROMPTS[0])["input_ids"]
    int8 = LeanDecoder(model, Int8Weights())
    fresh = list(int8.tokens(ids, 12))
    assert len(fresh) == 12 and fresh[0] == list(LeanDecoder(model).tokens(ids, 1))[0]
    with torch.inference_mode():
        cache = model(torch.tensor([ids[:5]]), use_cache=True).past_key_values
    assert list(int8.tokens(ids, 12, prefix=(tuple(ids[:5]), cache))) == fresh


def test_int8_needs_the_library_loop(tiny_backbone):
    with pytest.raises(InputError, match="int8_weights"):
        Generator(tiny_backbone, GenerationConfig(int8_weights=True, decode="hf"))


def test_supports_only_llama_style_models(tiny_backbone):
    assert supports(tiny_backbone.model)
    assert not supports(torch.nn.Linear(2, 2))
    from transformers import MistralConfig, MistralForCausalLM

    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=2)
    assert supports(MistralForCausalLM(MistralConfig(sliding_window=None, **small)))
    assert not supports(MistralForCausalLM(MistralConfig(sliding_window=16, **small)))  # a window: generate runs it
    with pytest.raises(InputError, match="Llama-style"):
        LeanDecoder(torch.nn.Linear(2, 2))
