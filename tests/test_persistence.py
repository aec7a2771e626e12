"""Index saves never lose an index: SIGKILL at any point, two writers at once, a held lock, cleanup
that touches only what save() made, and manifests that cannot point outside their version folder."""
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CORPUS, ROOT
from unified_rag import (IndexLoadError, IndexLockedError, InputError, UnifiedRAG,
                         UnifiedRAGError)
from unified_rag.io import check_save_target
from unified_rag.rag import LOCK, MANIFEST, OWNED

WORKER = ROOT / "tests" / "scripts" / "save_worker.py"


def state(rag: UnifiedRAG) -> dict:
    return {"docs": sorted(r[0] for r in rag.store.conn.execute("SELECT doc_id FROM documents")),
            "chunks": rag.store.all_chunk_ids()}


def versions(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def leftovers(path: Path) -> list[str]:
    """Anything in an index folder besides the manifest, the lock file and the version the manifest names."""
    named = {k.split("/")[0] for k in json.loads((path / MANIFEST).read_text())["files"]}
    return sorted(p.name for p in path.iterdir() if p.name not in {MANIFEST, LOCK, *named})


# --- the forked writers ------------------------------------------------------------------------------
class Worker:
    """tests/scripts/save_worker.py: one Python with the tiny model, forking a child per trial."""

    def __init__(self):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], cwd=ROOT, env=env, bufsize=0,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""
        self.hello = self.read(timeout=120)

    def read(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("the save worker did not answer")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise EOFError(f"the save worker died (exit {self.proc.wait()})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send(self, line: str) -> None:
        self.proc.stdin.write((line + "\n").encode())

    def close(self) -> None:
        try:
            self.send("quit")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def test_sigkill_at_random_points_leaves_the_old_or_the_new_index(worker, tmp_path, tiny_backbone):
    a, b, save_s = worker.hello["A"], worker.hello["B"], worker.hello["save_s"]
    path = tmp_path / "idx"
    worker.send(f"init {path}")
    assert worker.read() == {"ok": True}
    rng = random.Random(1234)
    on_disk, seen = a, []
    for _ in range(24):
        # The child saves B, A, B, ... and reports each save: let k of them finish, then kill it at a
        # random point of the next one (or of the fork and the first save, for k = 0).
        worker.send(f"loop {path}")
        k, pid, saved = rng.randrange(3), None, 0
        while pid is None or saved < k:
            msg = worker.read()
            pid, saved = msg.get("pid", pid), msg.get("saved", saved)
        time.sleep(rng.uniform(0, 2 * save_s))
        os.kill(pid, signal.SIGKILL)
        while "status" not in (msg := worker.read()):
            saved = msg["saved"]
        assert os.WIFSIGNALED(msg["status"]) and os.WTERMSIG(msg["status"]) == signal.SIGKILL
        # what `saved` saves left, and what the next one writes: B after an odd count, A after an even one
        # (a loaded machine can fit any number of saves before the kill)
        after = [on_disk if n == 0 else (b if n % 2 else a) for n in (saved, saved + 1)]
        got = state(UnifiedRAG.load(path, model=tiny_backbone))
        assert got in after, (saved, got)
        seen.append("A" if got == a else "B")
        on_disk = got
    assert set(seen) == {"A", "B"}, seen
    worker.send(f"init {path}")  # a save after all that leaves one version and nothing else
    assert worker.read() == {"ok": True}
    assert len(versions(path)) == 1 and leftovers(path) == []


def test_two_writers_at_once_leave_one_consistent_index(worker, tmp_path, tiny_backbone):
    a, b = worker.hello["A"], worker.hello["B"]
    for trial in range(5):
        path = tmp_path / f"idx{trial}"
        if trial % 2:
            worker.send(f"init {path}")  # also racing over an existing index
            assert worker.read() == {"ok": True}
        worker.send(f"race {path}")
        assert worker.read(timeout=120) == {"codes": [0, 0]}  # the second writer waited, no one failed
        assert state(UnifiedRAG.load(path, model=tiny_backbone)) in (a, b)
        assert len(versions(path)) == 1 and leftovers(path) == []


# --- the lock --------------------------------------------------------------------------------------
def test_a_held_lock_makes_save_raise_after_the_timeout(rag, tmp_path, tiny_backbone):
    path = tmp_path / "idx"
    rag.save(path)
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time\n"
                               "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
                               "print('locked', flush=True); time.sleep(120)", str(path / LOCK)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(IndexLockedError, match="lock_timeout") as e:
            rag.save(path, lock_timeout=0.5)
        assert 0.4 < time.monotonic() - t0 < 10 and str(path) in str(e.value)
        assert isinstance(e.value, UnifiedRAGError)
        assert len(UnifiedRAG.load(path, model=tiny_backbone)) == len(CORPUS)  # readers never wait
    finally:
        holder.kill()
        holder.wait()
    rag.delete("d0")
    rag.save(path, lock_timeout=5)  # a dead holder's lock is gone with it
    assert len(UnifiedRAG.load(path, model=tiny_backbone)) == len(CORPUS) - 1


# --- cleanup -----------------------------------------------------------------------------------------
def test_cleanup_keeps_the_users_folders(rag, tmp_path, tiny_backbone):
    out = tmp_path / "out"
    for name in ("v-1.0-release", ".tmp-mine", "v-20240101T000000-0123456789ab"):  # the last: our pattern, no marker
        (out / name).mkdir(parents=True)
        (out / name / "keep.txt").write_text("mine")
    (out / "manifest.json.bak.tmp").write_text("mine")  # not the 8 characters of mkstemp
    rag.save(out)
    rag.delete("d1")
    rag.save(out)
    for name in ("v-1.0-release", ".tmp-mine", "v-20240101T000000-0123456789ab"):
        assert (out / name / "keep.txt").read_text() == "mine"
    assert (out / "manifest.json.bak.tmp").exists()
    assert len(UnifiedRAG.load(out, model=tiny_backbone)) == len(CORPUS) - 1


def test_leftovers_of_killed_saves_are_removed(rag, tmp_path):
    path = tmp_path / "idx"
    rag.save(path)
    old = versions(path)[0]
    stray = ["manifest.json.abc12345.tmp", "manifest.json.k_9zz0aa.tmp"]
    for name in stray:
        (path / name).write_text("{half a manifest")
    dead_tmp = path / (".tmp-urag-" + "0" * 32)  # a save killed while writing its files
    (dead_tmp / "embedder").mkdir(parents=True)
    (dead_tmp / OWNED).write_text("x")
    (dead_tmp / "index.faiss").write_bytes(b"\0" * 10)
    (path / (".tmp-urag-" + "1" * 32)).mkdir()  # killed between mkdir and the marker
    (path / (".v-20240101T000000-aaaaaaaaaaab.tmp-" + "2" * 32)).mkdir()  # the same, named by today's atomic_dir
    kept = path / (".notes.tmp-" + "3" * 32)  # a look-alike save() never makes: left alone
    kept.mkdir()
    dead_version = path / "v-20240101T000000-aaaaaaaaaaaa"  # renamed into place, manifest not yet swapped
    dead_version.mkdir()
    (dead_version / OWNED).write_text("x")
    rag.save(path)
    assert versions(path)[0] != old and kept.is_dir()
    kept.rmdir()
    assert len(versions(path)) == 1 and leftovers(path) == []


def test_an_index_of_an_older_unified_rag_is_cleaned_on_save(rag, tmp_path, tiny_backbone):
    """Version folders of unified-rag <= 0.2 carry no marker: the one the manifest named goes on the next save."""
    path = tmp_path / "idx"
    rag.save(path)
    new = versions(path)[0]
    legacy = "v-20240101T000000-abcdef"
    (path / new / OWNED).unlink()
    (path / new).rename(path / legacy)
    m = json.loads((path / MANIFEST).read_text())
    m["files"] = {legacy + k[len(new):]: v for k, v in m["files"].items()}
    (path / MANIFEST).write_text(json.dumps(m))
    assert len(UnifiedRAG.load(path, model=tiny_backbone)) == len(CORPUS)
    rag.save(path)
    assert legacy not in versions(path) and len(versions(path)) == 1 and leftovers(path) == []


def test_version_folders_get_the_umask(rag, tmp_path):
    for umask, want in ((0o022, 0o755), (0o027, 0o750)):
        old = os.umask(umask)
        try:
            rag.save(tmp_path / f"idx{umask}")
        finally:
            os.umask(old)
        v = tmp_path / f"idx{umask}" / versions(tmp_path / f"idx{umask}")[0]
        assert (v.stat().st_mode & 0o777, (v / "embedder").stat().st_mode & 0o777) == (want, want)
        assert (v / "index.faiss").stat().st_mode & 0o777 == want & 0o666


# --- what load accepts ---------------------------------------------------------------------------------
def _rewrite_files(path: Path, fn) -> None:
    m = json.loads((path / MANIFEST).read_text())
    m["files"] = fn(m["files"])
    (path / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("bad", ["../outside.txt", "{v}/../../outside.txt", "/etc/hostname", "{v}/../{v}/x",
                                 "{v}", "./{v}/x", "other/x", "{v}\\..\\x"])
def test_manifest_paths_must_stay_in_one_version_folder(rag, tmp_path, tiny_backbone, bad):
    path = tmp_path / "idx"
    rag.save(path)
    (tmp_path / "outside.txt").write_text("secret")
    v = versions(path)[0]
    _rewrite_files(path, lambda f: {**f, bad.format(v=v): "0" * 64})
    with pytest.raises(IndexLoadError):
        UnifiedRAG.read_manifest(path)
    with pytest.raises(IndexLoadError):
        UnifiedRAG.load(path, model=tiny_backbone)


def test_a_symlink_out_of_the_version_folder_is_refused(rag, tmp_path, tiny_backbone):
    path = tmp_path / "idx"
    rag.save(path)
    v = versions(path)[0]
    (tmp_path / "outside.txt").write_text("secret")
    (path / v / "link.txt").symlink_to(tmp_path / "outside.txt")
    _rewrite_files(path, lambda f: {**f, f"{v}/link.txt": "0" * 64})
    with pytest.raises(IndexLoadError, match="outside"):
        UnifiedRAG.load(path, model=tiny_backbone)


@pytest.mark.parametrize("files", [{}, [], "x", {"{v}/index.faiss": "not-a-sha256"},
                                   {"{v}/embedder/config.json": "0" * 64}])
def test_an_empty_or_malformed_files_map_is_refused(rag, tmp_path, tiny_backbone, files):
    path = tmp_path / "idx"
    rag.save(path)
    v = versions(path)[0]
    _rewrite_files(path, lambda f: {k.format(v=v): d for k, d in files.items()} if isinstance(files, dict) else files)
    with pytest.raises(IndexLoadError):
        UnifiedRAG.load(path, model=tiny_backbone)


def test_index_ids_must_equal_store_ids(rag, tmp_path, tiny_backbone):
    cid = rag.store.chunk_ids(["d2"])[0]
    vec = rag.index.index.reconstruct(cid)  # flat IDMap2: reconstruct by id
    rag.index.remove([cid])
    rag.index.add(np.array([10_000], dtype=np.int64), vec[None])  # same count, other id
    rag.save(tmp_path / "idx")
    with pytest.raises(IndexLoadError, match="no vector"):
        UnifiedRAG.load(tmp_path / "idx", model=tiny_backbone)


def test_load_reads_the_new_version_when_a_save_removes_the_one_being_read(rag, tmp_path, tiny_backbone,
                                                                           monkeypatch):
    path = tmp_path / "idx"
    rag.save(path)
    rag.delete("d5")
    from unified_rag.index import VectorIndex

    orig, calls = VectorIndex.load.__func__, []

    def racing(cls, *a, **k):
        if not calls:
            calls.append(1)
            rag.save(path)  # a writer commits and removes the version this load had chosen
        return orig(cls, *a, **k)
    monkeypatch.setattr(VectorIndex, "load", classmethod(racing))
    assert len(UnifiedRAG.load(path, model=tiny_backbone)) == len(CORPUS) - 1


# --- the early check of a save target ------------------------------------------------------------------
def test_check_save_target(tmp_path, rag):
    assert check_save_target(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # it creates nothing
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="existing file") as e:
        check_save_target(tmp_path / "file.txt")
    assert str(tmp_path / "file.txt") in str(e.value)
    with pytest.raises(InputError, match="is a file"):
        check_save_target(tmp_path / "file.txt" / "idx")
    with pytest.raises(InputError, match="shorter name"):
        check_save_target(tmp_path / ("x" * 300))
    with pytest.raises(InputError, match="existing file"):
        rag.save(tmp_path / "file.txt")  # save checks first


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_save_target_unwritable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(InputError, match="not writable"):
        check_save_target(ro / "idx")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_vector_index_ids_for_every_kind(kind, tmp_path):
    from unified_rag.index import IndexConfig, VectorIndex

    idx = VectorIndex(8, IndexConfig(kind=kind, nlist=2))
    vecs = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    idx.add(np.arange(100, 140), vecs)
    idx.remove([105, 107])
    want = sorted(set(range(100, 140)) - {105, 107})
    assert sorted(idx.ids().tolist()) == want
    idx.save(tmp_path / "i.faiss")
    assert sorted(VectorIndex.load(tmp_path / "i.faiss", 8, idx.config).ids().tolist()) == want


@pytest.mark.parametrize("name", ["bad\x00name", "bad\ud800name"])
def test_check_save_target_refuses_invalid_names(tmp_path, name):
    with pytest.raises(InputError, match="not a valid file name|NUL byte"):
        check_save_target(tmp_path / name)


# --- no lost updates -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sequential", "overlapping"])
def test_two_writer_processes_lose_no_update(worker, tmp_path, tiny_backbone, mode):
    """Two real processes load one index, add 3 docs each and save (the second loaded before the first
    saved). Every doc a save() reported as saved is in the final index; the only other outcome allowed
    is the typed IndexChangedError. 20 trials."""
    base = set(worker.hello["A"]["docs"])
    for trial in range(20):
        path = tmp_path / f"idx{trial}"
        worker.send(f"init {path}")
        assert worker.read() == {"ok": True}
        worker.send(f"writers {path} {mode}")
        out = worker.read(timeout=240)
        assert out["codes"] == [0, 0], out
        final = set(state(UnifiedRAG.load(path, model=tiny_backbone))["docs"])
        for r in out["results"]:
            assert "saved" in r or r == {"error": "IndexChangedError"}, r
            if "saved" in r:
                assert set(r["saved"]) <= final, (trial, r, final)
        assert base <= final and len(versions(path)) == 1 and leftovers(path) == []


def test_merge_replays_adds_and_deletes_onto_the_newer_version(rag, tmp_path, tiny_backbone):
    from unified_rag import MeanPoolEmbedder

    path = tmp_path / "idx"
    rag.save(path)
    emb = rag.embedder
    one, two = (UnifiedRAG.load(path, model=tiny_backbone, embedder=emb) for _ in range(2))
    one.add_texts(["Whales sing long songs under the sea."])
    one.delete("d1")
    one.save(path)
    two.delete("d2")
    two.add_documents([{"id": "d3", "text": "Copper conducts electricity and heat very well."}])  # a replacement
    two.save(path)  # loaded before one's save: merged onto it
    docs = state(UnifiedRAG.load(path, model=tiny_backbone))["docs"]
    assert "d1" not in docs and "d2" not in docs and "d3" in docs and len(docs) == 6 - 2 + 1
    assert state(two) == state(UnifiedRAG.load(path, model=tiny_backbone))  # two now holds the merged state
    hits = two.retrieve("Copper conducts electricity and heat very well.", k=1, mode="dense")
    assert hits[0].doc_id == "d3" and "Copper" in hits[0].text
    # A fresh object saving into an existing index adds to it; overwrite=True replaces it.
    fresh = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone, query_instruction=None))
    fresh.add_texts(["Mount Fuji is the highest mountain in Japan."])
    fresh.save(path)
    assert len(state(UnifiedRAG.load(path, model=tiny_backbone))["docs"]) == 6 and len(fresh) == 6
    alone = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone, query_instruction=None))
    alone.add_texts(["Mount Fuji is the highest mountain in Japan."])
    alone.save(path, overwrite=True)
    assert len(state(UnifiedRAG.load(path, model=tiny_backbone))["docs"]) == 1
    assert UnifiedRAG.read_manifest(path).generation == 5


def test_changes_that_cannot_be_merged_raise_index_changed(rag, tmp_path, tiny_backbone):
    from unified_rag import IndexChangedError, MeanPoolEmbedder

    path = tmp_path / "idx"
    rag.save(path)
    other = UnifiedRAG(tiny_backbone, MeanPoolEmbedder(tiny_backbone, query_instruction="another instruction"))
    other.add_texts(["Saturn has rings of ice."])
    with pytest.raises(IndexChangedError, match="overwrite=True"):
        other.save(path)
    assert state(UnifiedRAG.load(path, model=tiny_backbone)) == state(rag)  # nothing lost, nothing written


# --- typed errors for corrupt and bad inputs -------------------------------------------------------------
def test_a_corrupt_store_page_is_a_typed_error(rag, tmp_path, tiny_backbone):
    import hashlib

    rag.add_texts([f"Filler document number {i} about rivers and lakes." for i in range(200)])
    path = tmp_path / "idx"
    rag.save(path)
    m = json.loads((path / MANIFEST).read_text())
    rel = next(k for k in m["files"] if k.endswith("store.sqlite"))
    db = path / rel
    raw = bytearray(db.read_bytes())
    assert len(raw) >= 4 * 4096
    raw[2 * 4096:3 * 4096] = bytes(4096)  # zero one page, then re-hash so that load() accepts the file
    db.write_bytes(bytes(raw))
    m["files"][rel] = hashlib.sha256(bytes(raw)).hexdigest()
    (path / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(IndexLoadError, match="store.sqlite is corrupt.*unified-rag verify"):  # at load, or a query
        loaded = UnifiedRAG.load(path, model=tiny_backbone)
        for q in ("rivers", "lakes", "mitochondria"):
            loaded.retrieve(q, k=50, mode="sparse")
        loaded.store.chunk_texts()
        loaded.store.count()
    with pytest.raises(IndexLoadError, match="store.sqlite is corrupt"):
        UnifiedRAG.verify(path)


def test_an_adapter_with_nan_statistics_is_refused(tiny_backbone, tmp_path):
    from safetensors.torch import load_file, save_file

    from unified_rag import Embedder, MeanPoolEmbedder, ModelLoadError

    emb = MeanPoolEmbedder(tiny_backbone)
    emb.fit_standardization(CORPUS)
    emb.save_pretrained(tmp_path / "e")
    state_ = load_file(tmp_path / "e" / "adapter.safetensors")
    name = sorted(state_)[0]
    state_[name][0] = float("nan")
    save_file(state_, tmp_path / "e" / "adapter.safetensors")
    with pytest.raises(ModelLoadError, match=f"{name}.*NaN"):
        Embedder.from_pretrained(tmp_path / "e", backbone=tiny_backbone)


def test_a_huge_question_keeps_the_top_source(rag):
    question = "What is the capital of France? " + "Please answer carefully. " * 40_000  # about 1 MB
    assert len(question) > 900_000
    with pytest.warns(UserWarning, match="question"):
        ids, used = rag.generator.rag_prompt(question, rag.retrieve("capital of France", k=3, mode="sparse"), 16)
    assert used and len(ids) <= rag.backbone.max_length - 16


def test_load_keeps_the_dtype_the_index_was_embedded_in(tmp_path):
    """dtype="auto" on load rebuilds the backbone in the index's recorded dtype where the hardware has
    it, so stored vectors and new query vectors come from one dtype (no "was embedded in" warning)."""
    import warnings

    import torch

    from tests.conftest import make_tiny_backbone
    from unified_rag import Backbone, MeanPoolEmbedder
    from unified_rag.backbone import _cpu_has_bf16, recorded_dtype

    tiny = make_tiny_backbone()
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    b = Backbone.from_pretrained(tmp_path / "m", dtype="fp32")
    r = UnifiedRAG(b, MeanPoolEmbedder(b, query_instruction=None))
    r.add_texts(CORPUS[:2])
    r.save(tmp_path / "idx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = UnifiedRAG.load(tmp_path / "idx")
    assert back.backbone.dtype == torch.float32
    assert recorded_dtype(None) == recorded_dtype("nonsense") == recorded_dtype("float16", "cpu") == "auto"
    assert recorded_dtype("bfloat16", "cpu") == (torch.bfloat16 if _cpu_has_bf16() else "auto")
