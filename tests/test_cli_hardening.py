"""The CLI's hardening: every user mistake is one `error:` line and exit code 2, found before the model
loads; choices list their values; help shows no type placeholders; warnings print as one line."""
import errno
import json
import os
import re
import string
import warnings
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from unified_rag.backbone import Backbone
from unified_rag.cli import EMBEDDER_KINDS, app
from unified_rag.errors import ModelLoadError

runner = CliRunner()
LONG = "x" * 300  # longer than NAME_MAX (255) on every common filesystem


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is a test failure: every check must come first. Records any call."""
    calls = []

    def loader(*a, **kw):
        calls.append((a, kw))
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(Backbone, "from_pretrained", loader)
    return calls


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A work dir holding a text file, a FIFO and a (fake, model-free) index of 3 chunks."""
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("The mitochondria is the powerhouse of the cell.\n")
    os.mkfifo("fifo")
    Path("idx").mkdir()
    Path("idx/manifest.json").write_text(json.dumps(dict(
        format_version=1, library_version="0", backbone="tiny", backbone_fingerprint="f", embedder_kind="mean",
        embedder_dim=8, adapter_hash="h", index={"kind": "flat"}, chunking={}, n_documents=2, n_chunks=3,
        files={"v-1/index.faiss": "0" * 64, "v-1/store.sqlite": "0" * 64}, created_at="2024-01-01T00:00:00")))
    Path("bad.json").write_text("{not json")
    Path("list.json").write_text("[1, 2]")
    Path("typo.json").write_text('{"stepz": 5}')
    return tmp_path


def one_error_line(r) -> str:
    """The run exited with 2 and printed exactly one line, `error: ...`, and no traceback."""
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


BAD = {  # name: (argv, a fragment of the one error line)
    "index-missing-paths": (["index", "nope1", "nope2", "-o", "out"], "not found: nope1, nope2"),
    "index-fifo": (["index", "fifo", "-o", "out"], "not a regular file or folder"),
    "index-nul-in-path": (["index", "a\x00b", "-o", "out"], "null byte"),
    "index-path-too-long": (["index", LONG, "-o", "out"], "name too long"),
    "index-out-is-file": (["index", "a.txt", "-o", "a.txt"], "is an existing file, and it must be a folder"),
    "index-out-is-fifo": (["index", "a.txt", "-o", "fifo"], "is an existing file, and it must be a folder"),
    "index-out-under-file": (["index", "a.txt", "-o", "a.txt/sub"], "is a file"),
    "index-out-too-long": (["index", "a.txt", "-o", LONG], "longer than this filesystem allows"),
    "index-batch-size-0": (["index", "a.txt", "-o", "out", "--batch-size", "0"], "--batch-size must be at least 1"),
    "index-batch-size-neg": (["index", "a.txt", "-o", "out", "--batch-size", "-4"], "--batch-size must be at least 1"),
    "index-nlist-0": (["index", "a.txt", "-o", "out", "--index-kind", "ivf", "--nlist", "0"], "--nlist"),
    "index-ef-search-0": (["index", "a.txt", "-o", "out", "--ef-search", "0"], "--ef-search"),
    "index-option-of-another-store": (["index", "a.txt", "-o", "out", "--index-kind", "milvus", "--hnsw-m", "8"],
                                      "--hnsw-m does not apply to --index-kind milvus"),
    "index-milvus-uri-on-faiss": (["index", "a.txt", "-o", "out", "--milvus-uri", "http://h:19530"],
                                  "--milvus-uri does not apply to --index-kind flat"),
    "index-embedder": (["index", "a.txt", "-o", "out", "--embedder", "bogus"], "unknown embedder bogus"),
    "index-chunk-tokens": (["index", "a.txt", "-o", "out", "--chunk-tokens", "4"], "chunk_tokens must be >= 8"),
    "index-overlap": (["index", "a.txt", "-o", "out", "--overlap", "999"], "overlap_tokens must be"),
    "index-unknown-option": (["index", "a.txt", "-o", "out", "--bogus"], "No such option: --bogus"),
    "index-no-paths": (["index", "-o", "out"], "Missing argument 'PATHS...'"),
    # Typer alone turns "" into Path("."): the command would index, or write into, the current folder.
    "index-empty-path": (["index", "", "-o", "out"], "the path is empty"),
    "index-empty-out": (["index", "a.txt", "-o", " "], "the path is empty"),
    "search-empty-dir": (["search", "", "q"], "the path is empty"),
    "train-empty-out": (["train", "gem", "-o", ""], "the path is empty"),
    "bench-empty-out": (["bench", "stsb", "-e", "bm25", "-o", ""], "the path is empty"),
    "search-missing-dir": (["search", "nope", "q"], "index dir not found: nope"),
    "search-not-an-index": (["search", ".", "q"], "manifest.json is missing"),
    "search-fifo-dir": (["search", "fifo", "q"], "not an index dir"),
    "search-k-0": (["search", "idx", "q", "-k", "0"], "-k must be at least 1, got 0"),
    "search-k-neg": (["search", "idx", "q", "-k", "-3"], "-k must be at least 1, got -3"),
    "search-k-too-big": (["search", "idx", "q", "-k", "10"], "only 3 chunks"),
    "search-k-text": (["search", "idx", "q", "-k", "abc"], "Invalid value for '-k'"),
    "search-empty-query": (["search", "idx", "  "], "the query is empty"),
    "search-surrogate": (["search", "idx", "caf\udce9"], "the query is not valid text"),
    "search-lone-surrogate": (["search", "idx", "\ud800"], "the query is not valid text"),
    "ask-max-new-tokens-0": (["ask", "idx", "q", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    "ask-max-new-tokens-neg": (["ask", "idx", "q", "--max-new-tokens", "-1"], "--max-new-tokens must be at least 1"),
    "ask-k-0": (["ask", "idx", "q", "-k", "0"], "-k must be at least 1"),
    "ask-surrogate": (["ask", "idx", "\udcff?"], "the question is not valid text"),
    "info-missing": (["info", "nope"], "index dir not found"),
    "info-too-long": (["info", LONG], "name too long"),
    "info-no-arg": (["info"], "Missing argument 'INDEX_DIR'"),
    "standardize-pooling": (["standardize", "a.txt", "-o", "out", "--pooling", "max"], "'mean', 'last'"),
    "standardize-limit": (["standardize", "a.txt", "-o", "out", "--limit", "0"], "--limit must be at least 1"),
    "standardize-missing": (["standardize", "nope.txt", "-o", "out"], "not found: nope.txt"),
    "train-config-fifo": (["train", "gem", "-o", "run", "--config", "fifo"], "--config fifo is not a regular file"),
    "train-config-missing": (["train", "gem", "-o", "run", "--config", "nope.json"], "--config not found"),
    "train-config-bad-json": (["train", "gem", "-o", "run", "--config", "bad.json"], "is not a JSON file"),
    "train-config-list": (["train", "gem", "-o", "run", "--config", "list.json"], "must hold a JSON object"),
    "train-data-missing": (["train", "gem", "-o", "run", "--data", "nope.txt"], "not found: nope.txt"),
    "train-out-is-file": (["train", "gem", "-o", "a.txt"], "is an existing file, and it must be a folder"),
    "train-steps-0": (["train", "gem", "-o", "run", "--steps", "0"], "--steps must be at least 1"),
    "train-lr-0": (["train", "gem", "-o", "run", "--lr", "0"], "--lr must be positive"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_error_line_before_any_model_load(name, files, no_model):
    argv, fragment = BAD[name]
    line = one_error_line(runner.invoke(app, argv))
    assert fragment in line
    assert no_model == []  # found before the loader ran


def test_pydantic_validation_error_from_a_config_is_one_line(files, no_model):
    """A config field that does not exist: pydantic's ValidationError, before the model loads."""
    line = one_error_line(runner.invoke(app, ["train", "gem", "-o", "run", "--config", "typo.json"]))
    assert "stepz" in line and "Extra inputs are not permitted" in line
    assert no_model == []


def test_index_kind_bogus_lists_valid_values(files, no_model):
    line = one_error_line(runner.invoke(app, ["index", "a.txt", "-o", "out", "--index-kind", "bogus"]))
    assert all(f"'{k}'" in line for k in ("flat", "ivf", "hnsw"))
    assert "--index-kind" in line and "Value error" not in line


def test_adding_to_an_index_refuses_layout_options_it_would_ignore(files, no_model):
    line = one_error_line(runner.invoke(app, ["index", "a.txt", "-o", "idx", "--index-kind", "hnsw",
                                              "--chunk-tokens", "64"]))
    assert "--index-kind hnsw (the index has flat)" in line and "--chunk-tokens 64 (the index has 256)" in line
    assert not no_model


def test_embedder_kinds_are_the_library_s_and_help_and_error_list_them_all(files, no_model):
    from embedders import EMBEDDERS

    assert set(EMBEDDER_KINDS) == {"auto", *EMBEDDERS}
    line = one_error_line(runner.invoke(app, ["index", "a.txt", "-o", "out", "--embedder", "nope"]))
    help_text = " ".join(runner.invoke(app, ["index", "--help"]).output.replace("│", " ").split())
    for kind in EMBEDDER_KINDS:
        assert kind in line and kind in help_text
    (files / "adapter").mkdir()  # a folder without embedder_config.json is no adapter dir
    assert "unknown embedder" in one_error_line(runner.invoke(app, ["index", "a.txt", "-o", "out", "--embedder",
                                                                    "adapter"]))


def test_model_load_failure_is_one_line(files, monkeypatch):
    def loader(*a, **kw):
        raise ModelLoadError("could not load backbone 'nope': not found")

    monkeypatch.setattr(Backbone, "from_pretrained", loader)
    assert "could not load backbone" in one_error_line(runner.invoke(app, ["index", "a.txt", "-o", "out"]))


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "Input/output error", "disk.bin"),
                                 PermissionError(errno.EACCES, "Permission denied", "/root/x"),
                                 OSError(errno.ENAMETOOLONG, "File name too long", LONG)])
def test_unexpected_oserror_is_one_line(files, monkeypatch, exc):
    def loader(*a, **kw):
        raise exc

    monkeypatch.setattr(Backbone, "from_pretrained", loader)
    line = one_error_line(runner.invoke(app, ["index", "a.txt", "-o", "out"]))
    assert exc.filename[:20] in line and len(line) < 300


def test_ctrl_c_is_130_with_one_line(files, monkeypatch):
    def loader(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Backbone, "from_pretrained", loader)
    r = runner.invoke(app, ["index", "a.txt", "-o", "out"])
    assert r.exit_code == 130 and "Traceback" not in r.output
    assert [line for line in r.output.splitlines() if line.strip()] == [
        "interrupted: nothing was saved, the last saved index is intact"]


def _commands(cmd, path=(), parent=None):
    """Every command, as --help reaches them: the plug-in groups (train, bench) join when listed."""
    yield path, cmd
    if hasattr(cmd, "list_commands"):  # a group (typer's own click)
        ctx = cmd.context_class(cmd, info_name=path[-1] if path else "unified-rag", parent=parent)
        for name in cmd.list_commands(ctx):
            yield from _commands(cmd.get_command(ctx, name), (*path, name), ctx)


PLACEHOLDER = re.compile(r"<(?:bool|int|float|str|text|path|file|dir|directory|Path|list\[[^\]]*\])>"
                         r"|<\w+(?:\|\w+)+>|\{\w+\}")


def test_help_has_no_type_placeholders_and_every_option_is_described():
    root = typer.main.get_command(app)
    seen = 0
    for path, cmd in _commands(root):
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        assert not PLACEHOLDER.search(r.output), (path, PLACEHOLDER.search(r.output).group(0), r.output)
        for p in cmd.params:
            assert p.help, f"{' '.join(path)}: {p.name} has no help text"
        seen += 1
    assert seen >= 20  # the root, index, search, ask, info, standardize, train and its 4, bench and its 8


def test_train_help_shows_each_method_s_defaults_and_they_are_the_config_classes():
    import importlib

    from trainers.cli import METHODS

    for method, (module, cls) in METHODS.items():
        assert getattr(importlib.import_module(module), cls.__name__) is cls, method  # the class run() is given
        out = " ".join(runner.invoke(app, ["train", method, "--help"]).output.replace("│", " ").split())
        assert f"Optimizer steps. [default: {cls.model_fields['steps'].default}]" in out
        assert f"Learning rate. [default: {cls.model_fields['lr'].default}]" in out
        assert "--resume --no-resume" in out and "Continue from the last checkpoint" in out
    assert METHODS["llm2vec-gen"][1].model_fields["steps"].default == 3000  # a method's own default is the one shown


def test_train_options_left_at_their_default_do_not_override_the_config(files, monkeypatch):
    import trainers.gem

    got = {}

    def run(cfg, out):
        got["cfg"] = cfg
        return out / "adapter"

    monkeypatch.setattr(trainers.gem, "run", run)
    (files / "c.json").write_text('{"steps": 7, "lr": 0.25, "seed": 3}')
    r = runner.invoke(app, ["train", "gem", "-c", "c.json", "-o", "run", "--lr", "0.5"])
    assert r.exit_code == 0, r.output
    cfg = got["cfg"]
    assert (cfg.steps, cfg.lr, cfg.seed, cfg.resume) == (7, 0.5, 3, False)


def test_warnings_print_as_one_line_and_the_happy_path_still_works(files, monkeypatch, tiny_backbone):
    """The tiny random Llama stands in for the real model: index (with a skipped file), search, info, ask."""
    monkeypatch.setattr(Backbone, "from_pretrained", lambda *a, **kw: tiny_backbone)
    docs = files / "docs"
    docs.mkdir()
    (docs / "one.txt").write_text("Paris is the capital of France and sits on the Seine.\n")
    (docs / "two.md").write_text("Insulin regulates blood glucose levels in the human body.\n")
    (docs / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    before = warnings.showwarning
    r = runner.invoke(app, ["index", str(docs), "-o", "out", "--chunk-tokens", "16", "--overlap", "4"])
    assert r.exit_code == 0, r.output
    assert warnings.showwarning is before  # the CLI's handler is gone once the command returns
    warn = [line for line in r.output.splitlines() if "skipped" in line]
    assert len(warn) == 1 and warn[0].startswith("warning: skipped 1 file(s)"), r.output
    assert "UserWarning" not in r.output and "warnings.warn" not in r.output
    assert "indexed 2 documents" in r.output
    r = runner.invoke(app, ["search", "out", "capital of France", "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert len([json.loads(line) for line in r.output.splitlines() if line.startswith("{")]) == 2
    r = runner.invoke(app, ["info", "out"])
    assert r.exit_code == 0 and json.loads(r.output)["n_documents"] == 2
    r = runner.invoke(app, ["ask", "out", "What is the capital of France?", "-k", "1", "--max-new-tokens", "3",
                            "--no-stream"])
    assert r.exit_code == 0 and "Sources:" in r.output, r.output
    r = runner.invoke(app, ["ask", "out", "What is the capital of France?", "-k", "1", "--extractive"])
    assert r.exit_code == 0 and "[1]" in r.output.splitlines()[0] and ">[1]" in r.output, r.output
    r = runner.invoke(app, ["ask", "out", "What is the capital of France?", "-k", "2", "--min-relevance", "1"])
    assert r.exit_code == 0 and "cannot answer" in r.output and "Sources:" not in r.output, r.output
    r = runner.invoke(app, ["ask", "out", "q", "--min-relevance", "2"])
    assert r.exit_code == 2 and "--min-relevance" in r.output, r.output


# --- fuzz: random argument lists never end in an unhandled exception ----------------------------
TOKENS = ["-k", "--max-new-tokens", "--out", "-o", "--batch-size", "--index-kind", "--embedder", "--nlist",
          "--ef-search", "--hnsw-m", "--chunk-tokens", "--overlap", "--json", "--stream", "--no-stream", "-v",
          "--model", "flat", "ivf", "bogus", "auto", "gem", "a.txt", "fifo", "idx", "out", "nope/missing.txt", ".",
          "-1", "0", "1", "2", "99999999999999999999", "1e3", "\udcff", "\ud800", "caf\udce9", LONG, "a\x00b", ""]
token = st.one_of(st.sampled_from(TOKENS),
                  st.integers(-10, 10).map(str),
                  st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
                  st.text(string.printable, max_size=12))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from(["index", "search", "ask", "info"]), args=st.lists(token, max_size=6))
def test_fuzz_cli_never_leaves_an_unhandled_exception(files, monkeypatch, cmd, args):
    def loader(*a, **kw):
        raise ModelLoadError("no model in this test")

    monkeypatch.setattr(Backbone, "from_pretrained", loader)
    r = runner.invoke(app, [cmd, *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception, r.output)
    assert r.exit_code in (0, 2), (args, r.exit_code, r.output)
    assert "Traceback" not in r.output
    if r.exit_code == 2:
        one_error_line(r)


def test_an_interrupted_index_run_continues_from_its_last_save(tmp_path, monkeypatch, tiny_backbone):
    from tests.conftest import CORPUS
    from unified_rag.rag import UnifiedRAG

    monkeypatch.chdir(tmp_path)
    Path("docs").mkdir()
    for i, text in enumerate(CORPUS):
        Path(f"docs/{i}.txt").write_text(text)
    monkeypatch.setattr(Backbone, "from_pretrained", classmethod(lambda cls, *a, **k: tiny_backbone))
    add, commit = UnifiedRAG.add_documents, UnifiedRAG._commit
    monkeypatch.setattr(UnifiedRAG, "add_documents", lambda self, docs, **k: add(self, docs, group_size=2, **k))
    groups = []

    def commit_then_stop(self, group, *a, **k):  # Ctrl-C during the third group of two documents
        groups.append([d.id for d, _ in group])
        if len(groups) == 3:
            raise KeyboardInterrupt
        return commit(self, group, *a, **k)

    monkeypatch.setattr(UnifiedRAG, "_commit", commit_then_stop)
    args = ["index", "docs", "-o", "idx", "--embedder", "mean", "--save-every", "1e-9"]
    r = runner.invoke(app, args)
    assert r.exit_code == 130 and "idx holds the 4 documents saved at" in r.output, r.output
    saved = {d for g in groups[:2] for d in g}
    assert len(UnifiedRAG.load("idx", model=tiny_backbone)) == 4
    monkeypatch.setattr(UnifiedRAG, "_commit", lambda self, group, *a, **k: groups.append(
        [d.id for d, _ in group]) or commit(self, group, *a, **k))
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "indexed 2 documents; idx now holds 6 documents" in r.output, r.output
    assert not saved & set(groups[3])  # the second run embedded only the two the first had not saved
    one_error_line(runner.invoke(app, [*args[:-1], "nan"]))


@pytest.mark.parametrize("extra, fragment", [(["--reading", "bogus"], "joint or per-source"),
                                              (["--reading", "per-source"], "--pipeline"),
                                              (["--pipeline", "--sources", "0"], "1 or more")])
def test_calibrate_answer_reading_mistakes_are_one_line(tmp_path, no_model, extra, fragment):
    (tmp_path / "answer_config.json").write_text(json.dumps({"decline_bias": -0.75}))
    line = one_error_line(runner.invoke(app, ["train", "calibrate-answer", str(tmp_path), *extra]))
    assert fragment in line and no_model == []
