import json

import pytest

from tests.conftest import CORPUS
from unified_rag import (Answer, Document, EmbedderMismatchError, EmptyCorpusError, IndexLoadError, InputError,
                         LLM2VecGenEmbedder, MeanPoolEmbedder, UnifiedRAG)
from unified_rag.generator import cited_numbers
from unified_rag.rag import MANIFEST


def test_retrieve_finds_an_exact_copy(rag):
    hits = rag.retrieve(CORPUS[2], k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].doc_id == "d2" and hits[0].metadata == {"n": 2}
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_long_documents_are_split_not_truncated(rag):
    long = " ".join(f"sentence number {i} about insulin." for i in range(60))
    rag.add_documents([Document(text=long, id="long")])
    n_chunks = len(rag.store.chunk_ids(["long"]))
    assert n_chunks > 5
    assert long.rstrip().endswith(rag.store.chunks(rag.store.chunk_ids(["long"]))[-1]["text"].rstrip()[-20:])


def test_delete_and_update(rag):
    before = rag.index.ntotal
    n = rag.delete("d2")
    assert rag.index.ntotal == before - n and "d2" not in {h.doc_id for h in rag.retrieve(CORPUS[2], k=3)}
    rag.add_documents([Document(text="Completely new text about volcanoes erupting.", id="d3")])  # replaces d3
    assert [c["text"] for c in rag.store.chunks(rag.store.chunk_ids(["d3"]))] == [
        "Completely new text about volcanoes erupting."]
    assert rag.index.ntotal == rag.store.count()[1]
    with pytest.raises(InputError, match="unknown"):
        rag.delete(["nope"])


@pytest.mark.parametrize("k", [0, -1, 1000, 2.5])
def test_bad_k(rag, k):
    with pytest.raises(InputError):
        rag.retrieve("cell", k=k)


def test_empty_inputs(tiny_backbone, rag):
    empty = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone))
    with pytest.raises(EmptyCorpusError):
        empty.retrieve("anything")
    for bad in ([], ["   "], [""]):
        with pytest.raises(InputError):
            empty.add_documents(bad)
    with pytest.raises(InputError):
        rag.retrieve("   ")


def test_answer_cites_numbered_sources(rag, monkeypatch):
    ans = rag.answer("What produces ATP?", k=2, max_new_tokens=5)
    assert isinstance(ans, Answer) and [h.rank for h in ans.sources] == [1, 2]
    assert ans.cited == cited_numbers(ans.text, 2)
    assert bool(ans.cited) == any(c.isalnum() for c in ans.text)  # any answer with a word ends up cited
    # What the generator writes in range stays as written; [3] names no source and is dropped.
    monkeypatch.setattr(rag.generator, "generate_ids", lambda ids, n=None, prefix=None: "ATP comes from mitochondria [2], [3] and [1, 2].")
    written = rag.answer("What produces ATP?", k=2, max_new_tokens=5)
    assert written.cited == [1, 2] and "[3]" not in written.text
    assert {c.origin for c in written.citations} == {"model"}
    # A text with no citation gets one per sentence, recorded as attributed afterwards.
    monkeypatch.setattr(rag.generator, "generate_ids", lambda ids, n=None, prefix=None: "No citation here. Nor here.")
    bare = rag.answer("What produces ATP?", k=2, max_new_tokens=5)
    assert [(c.sentence, c.origin) for c in bare.citations] == [(0, "attributed"), (1, "attributed")]
    assert bare.cited and all(1 <= n <= 2 for n in bare.cited)
    monkeypatch.undo()
    raw = rag.generator.generate_ids(rag.generator.rag_prompt("What produces ATP?", ans.sources, 5)[0], 5)
    stream = rag.stream_answer("What produces ATP?", k=2, max_new_tokens=5)
    pieces = list(stream)
    assert "".join(pieces).strip() == raw  # the pieces are the generator's own text (greedy: as in batch)
    assert stream.answer.text == ans.text and stream.answer.citations == ans.citations


def test_save_load_round_trip(rag, tmp_path, tiny_backbone):
    rag.save(tmp_path / "idx")
    m = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert m["embedder_kind"] == "mean" and m["embedder_dim"] == 64 and m["backbone"] == "tiny-llama"
    assert m["adapter_hash"] == rag.embedder.fingerprint and m["library_version"]
    back = UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone)
    assert [h.model_dump() for h in back.retrieve(CORPUS[1], 3)] == [h.model_dump() for h in rag.retrieve(CORPUS[1], 3)]
    rag.delete("d0")
    rag.save(tmp_path / "idx")  # a second save replaces the first, leaving one version
    assert len([p for p in (tmp_path / "idx").iterdir() if p.is_dir()]) == 1
    assert len(UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone)) == len(CORPUS) - 1


def test_save_killed_midway_leaves_previous_index(rag, tmp_path, tiny_backbone, monkeypatch):
    rag.save(tmp_path / "idx")
    rag.add_documents(["A brand new document about glaciers."])
    import unified_rag.persist as mod  # where save() writes the manifest

    def boom(*a, **k):
        raise KeyboardInterrupt  # the process dies just before the commit point
    monkeypatch.setattr(mod, "atomic_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        rag.save(tmp_path / "idx")
    monkeypatch.undo()
    back = UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone)
    assert len(back) == len(CORPUS)


def test_interrupted_indexing_keeps_saved_index(rag, tmp_path, tiny_backbone, monkeypatch):
    rag.save(tmp_path / "idx")
    calls = {"n": 0}
    orig = rag.embedder.encode

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return orig(*a, **k)
    monkeypatch.setattr(rag.embedder, "encode", flaky)
    with pytest.raises(KeyboardInterrupt):
        rag.add_documents([f"new text number {i}" for i in range(40)], group_size=8)
    assert rag.index.ntotal == rag.store.count()[1]  # memory stays consistent group by group
    assert len(UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone)) == len(CORPUS)


def test_skip_unchanged_embeds_only_what_is_new_or_changed(rag, monkeypatch):
    encoded = []
    orig = rag.embedder.encode
    monkeypatch.setattr(rag.embedder, "encode", lambda texts, **k: encoded.extend(texts) or orig(texts, **k))
    docs = [Document(text=t, id=f"d{i}", metadata={"n": i}) for i, t in enumerate(CORPUS)]
    chunks_before = {d.id: rag.store.chunk_ids([d.id]) for d in docs}
    assert rag.add_documents(docs, skip_unchanged=True) == [] and encoded == []
    docs[1] = Document(text=CORPUS[1] + " It is also known for its museums.", id="d1", metadata={"n": 1})
    docs[2] = Document(text=CORPUS[2], id="d2", metadata={"n": 99})  # same text, other metadata: changed
    docs.append(Document(text="A brand new document about tides.", id="new"))
    assert rag.add_documents(docs, skip_unchanged=True) == ["d1", "d2", "new"]
    assert encoded == [docs[1].text, CORPUS[2], docs[-1].text]
    for d in ("d0", "d3", "d4", "d5"):  # untouched: the same chunk rows, not replaced copies
        assert rag.store.chunk_ids([d]) == chunks_before[d]
    assert rag.store.chunk_ids(["d1"]) != chunks_before["d1"]
    assert rag.retrieve("A brand new document about tides.", k=1)[0].doc_id == "new"
    encoded.clear()
    assert len(rag.add_documents(docs)) == len(docs) and len(encoded) == len(docs)  # default: replace all


def test_corrupt_and_truncated_index_dirs(rag, tmp_path, tiny_backbone):
    with pytest.raises(IndexLoadError, match="not found"):
        UnifiedRAG.load(tmp_path / "missing", model=tiny_backbone)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexLoadError, match="manifest"):
        UnifiedRAG.load(tmp_path / "empty", model=tiny_backbone)
    rag.save(tmp_path / "idx")
    faiss_file = next((tmp_path / "idx").rglob("index.faiss"))
    good = faiss_file.read_bytes()
    faiss_file.write_bytes(good[:100])
    with pytest.raises(IndexLoadError, match="truncated: .* has 100 bytes"):  # the default check: sizes
        UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone)
    faiss_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit off: only SHA-256 sees it
    with pytest.raises(IndexLoadError, match="checksum"):
        UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone, verify=True)
    with pytest.raises(IndexLoadError, match="checksum"):
        UnifiedRAG.verify(tmp_path / "idx")
    faiss_file.write_bytes(good)
    assert len(UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone, verify=True)) == len(CORPUS)
    (tmp_path / "idx" / MANIFEST).write_text("{not json")
    with pytest.raises(IndexLoadError, match="corrupt"):
        UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone)


def test_other_embedder_is_refused_naming_both(rag, tmp_path, tiny_backbone):
    rag.save(tmp_path / "idx")
    other = LLM2VecGenEmbedder(tiny_backbone)
    with pytest.raises(EmbedderMismatchError) as e:
        UnifiedRAG.load(tmp_path / "idx", embedder=other)
    assert "mean" in str(e.value) and "llm2vec-gen" in str(e.value)


def test_reads_files_and_skips_binary_with_a_warning(tiny_backbone, tmp_path):
    (tmp_path / "a.txt").write_text("Plain text about cells and energy.")
    (tmp_path / "b.md").write_text("# Title\nMarkdown about Paris.")
    (tmp_path / "c.jsonl").write_text('{"_id": "x1", "title": "T", "text": "json line doc"}\nnot json\n')
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    rag = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone))
    with pytest.warns(UserWarning) as rec:
        ids = rag.add_paths(tmp_path)
    msgs = " ".join(str(w.message) for w in rec)
    assert "bin.txt" in msgs and "latin.txt" in msgs and "c.jsonl:2" in msgs
    assert "x1" in ids and len(ids) == 3
    with pytest.raises(InputError, match="not found"):
        rag.add_paths(tmp_path / "nope.txt")


def test_one_copy_of_the_weights(rag, tiny_backbone):
    from unified_rag.integrations.llama_index import UnifiedRAGEmbedding, UnifiedRAGLLM

    llm = UnifiedRAGLLM.from_rag(rag)
    emb = UnifiedRAGEmbedding.from_rag(rag, embedder="llm2vec-gen")
    models = [rag.embedder.backbone.model, rag.generator.backbone.model, llm._generator.backbone.model,
              emb._embedder.backbone.model]
    ptrs = [[p.data_ptr() for p in m.parameters()] for m in models]
    assert all(p == ptrs[0] for p in ptrs)
    with pytest.raises(InputError):
        UnifiedRAG(tiny_backbone, MeanPoolEmbedder(_other_backbone(tiny_backbone)))


def _other_backbone(b):
    from unified_rag import Backbone

    return Backbone(b.model, b.tokenizer, name="same-weights-other-object")


def test_indexing_progress_moves_per_batch(tiny_backbone, monkeypatch):
    import unified_rag.rag as R

    updates = []

    class Bar:  # records what the indexing bar is told
        def __init__(self, *a, **kw):
            pass

        def update(self, n):
            updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(R, "tqdm", Bar)
    r = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone), chunking={"chunk_tokens": 16, "overlap_tokens": 2})
    r.add_texts(CORPUS * 3, batch_size=4)
    assert len(updates) > 1 and max(updates) <= 4 and sum(updates) == r.index.ntotal


def test_batched_generation_matches_one_at_a_time(tiny_backbone):
    """Left-padded batches give each prompt the tokens it gets alone (greedy, float32). Compared as
    token ids: the random tiny model's tokens mostly decode to whitespace."""
    import torch

    from unified_rag.generator import GenerationConfig, Generator

    # A strong repetition penalty keeps the random model from repeating one token for ever.
    g, model = Generator(tiny_backbone, GenerationConfig(repetition_penalty=5.0)), tiny_backbone.model
    prompts = [g.prompt_ids(p) for p in ("Paris is", "The capital of a large country far away is", "x")]
    with torch.no_grad():
        kw = g._generate_kwargs(prompts, 6)
        batch = model.generate(**kw)[:, kw["input_ids"].shape[1]:].tolist()
        alone = [model.generate(**g._generate_kwargs([p], 6))[0, len(p):].tolist() for p in prompts]
    assert batch == alone and len({tuple(b) for b in batch}) > 1
    texts = g.generate_batch(prompts, max_new_tokens=6)
    assert [t for t, _ in texts] == [g.generate_ids(p, 6) for p in prompts]


def test_cli_verify(rag, tmp_path):
    from typer.testing import CliRunner

    from unified_rag.cli import app

    rag.save(tmp_path / "idx")
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "idx")])
    assert r.exit_code == 0 and "files of" in r.output and "match their checksums" in r.output
    store = next((tmp_path / "idx").rglob("store.sqlite"))
    data = store.read_bytes()
    store.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "idx")])
    assert r.exit_code == 2 and r.output.startswith("error:") and "store.sqlite does not match its checksum" in r.output


def test_retrieve_takes_search_parameters(tiny_backbone):
    from tests.conftest import make_tiny_rag

    rag = make_tiny_rag(tiny_backbone)
    base = [h.chunk_id for h in rag.retrieve("insulin glucose", k=3)]
    assert [h.chunk_id for h in rag.retrieve("insulin glucose", k=3, ef_search=50)] == base  # flat: exact anyway
    with pytest.raises(InputError, match="nprobe"):
        rag.retrieve("insulin glucose", k=3, nprobe=0)
