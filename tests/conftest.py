import os
from pathlib import Path

import pytest
import torch

DATA = Path(os.environ.get("UNIFIED_RAG_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
ROOT = Path(__file__).resolve().parents[1]

CORPUS = [
    "The mitochondria is the powerhouse of the cell and produces ATP.",
    "Paris is the capital of France and sits on the Seine.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Pythagorean theorem relates the sides of a right triangle.",
    "Insulin regulates blood glucose levels in the human body.",
    "FAISS performs efficient similarity search over dense vectors.",
]


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3 + ["Given a question, retrieve passages that answer it"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   bos_token="<|im_start|>", unk_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return fast


@pytest.fixture(scope="session")
def tiny_backbone():
    """A randomly initialised 2-layer Llama: seconds, not minutes. float32 for exact comparisons."""
    return make_tiny_backbone()


@pytest.fixture
def fresh_tiny_backbone():
    """The same tiny Llama, built anew for a test that trains it or injects adapters into it."""
    return make_tiny_backbone()


def make_tiny_backbone():
    from transformers import LlamaConfig, LlamaForCausalLM

    from unified_rag import Backbone

    tok = _tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    return Backbone(LlamaForCausalLM(cfg).float(), tok, name="tiny-llama")


def make_tiny_rag(backbone):
    """CORPUS indexed on the tiny model as d0..d5. No query instruction: on a random model, only an
    exact copy is reliably nearest."""
    from unified_rag import Document, MeanPoolEmbedder, UnifiedRAG

    r = UnifiedRAG(backbone, MeanPoolEmbedder(backbone, query_instruction=None),
                   chunking={"chunk_tokens": 48, "overlap_tokens": 8})
    r.add_documents([Document(text=t, id=f"d{i}", metadata={"n": i}) for i, t in enumerate(CORPUS)])
    return r


@pytest.fixture
def rag(tiny_backbone):
    return make_tiny_rag(tiny_backbone)


@pytest.fixture(scope="session")
def smol():
    """The real offline default, SmolLM2-135M-Instruct, loaded once for every integration test."""
    from unified_rag import Backbone

    return Backbone.from_pretrained()


def need_data(*parts: str) -> Path:
    """A shared data set, or a skip with one reason. CI sets UNIFIED_RAG_REQUIRE_DATA=1: missing data
    then fails the test instead, so a moved data folder cannot silently shrink the suite."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        msg = (f"shared data missing: {p} (README, 'Data': point UNIFIED_RAG_DATA at the folder that holds "
               "scifact/, stsb/, ...)")
        if os.environ.get("UNIFIED_RAG_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def need_module(name: str):
    """An optional package, or a skip naming it. Under CI (UNIFIED_RAG_REQUIRE_DATA=1, as for data) a
    missing package fails the test instead: a broken install must not silently shrink the suite."""
    try:
        return __import__("importlib").import_module(name)
    except ImportError as e:
        msg = f"optional package missing: {name} ({e}); install the test extras (make install)"
        if os.environ.get("UNIFIED_RAG_REQUIRE_DATA") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg, allow_module_level=True)


@pytest.fixture(scope="module")
def one_thread():
    """Training tests on the tiny model run several times faster on one thread when the cores are busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
