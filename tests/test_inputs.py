"""Bad input gets a typed error and loses nothing: targeted cases, then a hypothesis fuzz of the public API."""
import os
import threading
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CORPUS, make_tiny_rag
from unified_rag import InputError, MeanPoolEmbedder, UnifiedRAG, UnifiedRAGError
from unified_rag.errors import MissingDependencyError, require


@pytest.fixture(scope="module")
def rag(tiny_backbone):  # read-only here: built once for the whole module
    return make_tiny_rag(tiny_backbone)


def test_add_texts_and_paths_are_unambiguous(tiny_backbone, tmp_path):
    (tmp_path / "note.txt").write_text("A file about the mitochondria.")
    r = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone))
    assert r.add_documents([str(tmp_path / "note.txt")]) == [str(tmp_path / "note.txt")]  # a str path is a path
    ids = r.add_texts([str(tmp_path / "note.txt"), "plain words"])  # add_texts: always text, even a path
    assert len(ids) == 2 and len(r) == 3
    with pytest.warns(DeprecationWarning, match="add_texts"):
        r.add_documents(["a plain string that names no file"])
    assert r.add_texts(["x y z"], metadata=[{"k": 1}])
    with pytest.raises(InputError, match="metadata"):
        r.add_texts(["a", "b"], metadata=[{}])


@pytest.mark.parametrize("bad", [None, 5, 3.5, object()])
def test_none_and_non_iterables(rag, bad):
    for call in (rag.add_documents, rag.add_texts, rag.delete):
        with pytest.raises(InputError):
            call(bad)


def test_typed_k_tokens_batch_and_configs(rag, tiny_backbone):
    for k in (True, 1.0, "3", None, 0, -1):
        with pytest.raises(InputError, match="k must be"):
            rag.retrieve("cells", k=k)
    for n in (0, -5, 2.5, "8", True):
        with pytest.raises(InputError, match="max_new_tokens"):
            rag.answer("cells", max_new_tokens=n)
        with pytest.raises(InputError, match="max_new_tokens"):
            rag.stream_answer("cells", max_new_tokens=n)
    with pytest.raises(InputError, match="leaves no room"):
        rag.answer("cells", max_new_tokens=tiny_backbone.max_length)
    with pytest.raises(InputError, match="batch_size"):
        rag.add_texts(["more text"], batch_size=0)
    with pytest.raises(InputError, match="batch_size"):
        rag.embedder.encode(["x"], batch_size="4")
    with pytest.raises(InputError, match="index config: kind"):
        UnifiedRAG(tiny_backbone, rag.embedder, index={"kind": "bogus"})
    with pytest.raises(InputError, match="generation config: max_new_tokens"):
        UnifiedRAG(tiny_backbone, rag.embedder, generation={"max_new_tokens": 0})


def test_lone_surrogates_are_input_errors(rag):
    with pytest.raises(InputError, match="surrogate"):
        rag.retrieve("bad \ud800 query")
    with pytest.raises(InputError, match="surrogate"):
        rag.add_texts(["fine", "bad \udfff text"])
    with pytest.raises(InputError, match="surrogate"):
        rag.embedder.encode(["x\ud83d"])
    n = len(rag)
    assert n == len(CORPUS)  # nothing was half-added


def test_bad_files_are_reported_and_the_rest_indexed(tiny_backbone, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Insulin regulates blood glucose.")
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"_id": "ok", "text": "a fine line"}\n' + "[" * 100_000 + "]" * 100_000 + "\n"
                    + '{"_id": "sur", "text": "bad \\ud800 escape"}\n')
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    r = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone))
    done = []
    t = threading.Thread(target=lambda: done.append(r.add_paths(good, deep, fifo)), daemon=True)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t.start()
        t.join(60)
    assert done, "a named pipe must be refused before it is opened, never block"
    assert sorted(done[0]) == sorted([str(good), "ok"])
    text = " ".join(str(w.message) for w in rec)
    assert "pipe.txt (not a regular file)" in text and "deep.jsonl:2" in text and "deep.jsonl:3" in text
    with pytest.raises(InputError, match="path not found"):
        r.add_paths(tmp_path / ("x" * 300 + ".txt"))  # a name too long for the filesystem


def test_missing_optional_package_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"unified-rag\[train\]") as e:
        require("no_such_package_xyz", "train", "LoRA embedders")
    assert isinstance(e.value, UnifiedRAGError) and isinstance(e.value, ImportError)


# --- the fuzz suite: anything a caller can pass, the outcome is a result or a UnifiedRAGError ----------
junk = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True), st.text(max_size=40),
                 st.binary(max_size=10), st.lists(st.text(max_size=20), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _typed_or_ok(fn, *a, **kw):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*a, **kw)
    except UnifiedRAGError:
        pass


@FUZZ
@given(query=junk, k=junk)
def test_fuzz_retrieve(rag, query, k):
    _typed_or_ok(rag.retrieve, query, k=k)


@FUZZ
@given(query=st.text(max_size=30), k=junk, n=junk)
def test_fuzz_answer(rag, query, k, n):
    _typed_or_ok(rag.answer, query, k=k, max_new_tokens=n)


@FUZZ
@given(items=st.one_of(junk, st.lists(junk, max_size=3)))
def test_fuzz_add_and_delete(tiny_backbone, items):
    r = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone), chunking={"chunk_tokens": 32, "overlap_tokens": 4})
    _typed_or_ok(r.add_texts, items)
    _typed_or_ok(r.add_documents, items)
    _typed_or_ok(r.delete, items)
    assert r.index.ntotal == r.store.count()[1]  # whatever happened, index and store agree


@FUZZ
@given(cfg=st.dictionaries(st.sampled_from(["kind", "nlist", "chunk_tokens", "overlap_tokens", "max_new_tokens",
                                             "temperature", "bogus"]), junk, max_size=3))
def test_fuzz_configs(tiny_backbone, cfg):
    emb = MeanPoolEmbedder(tiny_backbone)
    for name in ("index", "chunking", "generation"):
        try:
            r = UnifiedRAG(tiny_backbone, emb, **{name: cfg})
        except UnifiedRAGError:
            continue
        _typed_or_ok(r.add_texts, CORPUS[:2])  # a config that validates must also work, or fail typed
        if len(r):
            _typed_or_ok(r.answer, "cells", k=1, max_new_tokens=2)


def test_garbage_adapter_file_is_a_model_load_error(tiny_backbone, tmp_path):
    from unified_rag import Embedder, ModelLoadError

    emb = MeanPoolEmbedder(tiny_backbone)
    emb.fit_standardization(CORPUS)
    emb.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter.safetensors").write_bytes(b"\x00garbage, not safetensors")
    with pytest.raises(ModelLoadError, match="adapter.safetensors"):
        Embedder.from_pretrained(tmp_path / "adapter", backbone=tiny_backbone)
    (tmp_path / "adapter" / "embedder_config.json").write_text('{"kind": "mean", "max_length": "many"}')
    with pytest.raises(ModelLoadError, match="not a valid embedder config"):
        Embedder.from_pretrained(tmp_path / "adapter", backbone=tiny_backbone)


def test_one_jsonl_reader_names_the_bad_line_or_drops_it(tmp_path):
    import gzip

    from unified_rag.io import read_jsonl

    f = tmp_path / "rows.jsonl.gz"
    f.write_bytes(gzip.compress(b'{"id": "a"}\n\n[1, 2]\n{"id": "b"}\n{"id": "c", "tor'))
    with pytest.raises(InputError, match=r"rows\.jsonl\.gz:3 is not a JSON object"):
        read_jsonl(f)
    assert [r["id"] for r in read_jsonl(f, strict=False)] == ["a", "b"]  # the list and the torn line dropped
    with pytest.raises(InputError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")
