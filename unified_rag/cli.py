"""`unified-rag` command line: index, search, ask, info. User mistakes give one line, not a traceback.

Every argument, path and option is checked before the model is loaded (that takes 5-24 s): a mistake
costs a second, not a load. Each mistake prints one `error: ...` line on stderr and exits with code 2;
Ctrl-C prints one line and exits with 130; library warnings print as one `warning: ...` line.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import stat
import sys
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from unified_rag.errors import EmptyCorpusError, IndexLoadError, InputError, UnifiedRAGError

try:  # typer >= 0.20 ships its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click.exceptions import ClickException

    try:
        from click.exceptions import NoArgsIsHelpError
    except ImportError:
        NoArgsIsHelpError = ()  # type: ignore[assignment,misc]

# `--embedder` kinds; tests/test_cli_hardening.py checks this against embedders.EMBEDDERS. Kept here
# so that `--help` and the checks do not import torch.
EMBEDDER_KINDS = ("auto", "mean", "last", "llm2vec-gen", "gem", "llm2vec", "birecon")
EMBEDDER_CONFIG = "embedder_config.json"  # embedders.base.CONFIG_NAME: marks an adapter dir
MANIFEST_NAME = "manifest.json"  # unified_rag.rag.MANIFEST


class IndexKind(str, Enum):
    flat = "flat"
    ivf = "ivf"
    hnsw = "hnsw"
    milvus = "milvus"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Mode(str, Enum):  # unified_rag.rag.RETRIEVAL_MODES
    dense = "dense"
    sparse = "sparse"
    hybrid = "hybrid"


ModeOption = typer.Option(Mode.hybrid, "--mode", help="dense: the backbone's embeddings; sparse: BM25 over the "
                          "same chunks; hybrid: z-score fusion of both.")


class Pooling(str, Enum):
    mean = "mean"
    last = "last"


class DType(str, Enum):
    bf16 = "bf16"
    fp32 = "fp32"


# --- checks: cheap, and all of them run before any model is loaded -------------------------------
def _one_line(text: object) -> str:
    """Text safe to print on one line: no newlines, no lone surrogates (they cannot be encoded)."""
    s = " ".join(str(text).split())
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _show(path: object, width: int = 120) -> str:
    """A path for a message: printable, and shortened in the middle when very long."""
    s = _one_line(os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else path)
    return s if len(s) <= width else f"{s[:width // 2 - 2]}...{s[-(width // 2 - 2):]} ({len(s)} characters)"


def _os_reason(e: OSError) -> str:
    return "name too long for this filesystem" if e.errno == errno.ENAMETOOLONG else _one_line(e.strerror or e)


def _os_message(e: OSError) -> str:
    """An OSError on one line: the reason and, when known, the (shortened) file name."""
    return f"{_os_reason(e)}: {_show(e.filename)}" if e.filename else _os_reason(e)


def _stat(path: Path, what: str = "path") -> Optional[os.stat_result]:
    """os.stat (never opens the path): None when it does not exist; InputError for names the OS refuses."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:  # a NUL byte, or a lone surrogate that cannot become a file name
        raise InputError(f"{what} {_show(path)} is not a valid file name") from None
    except OSError as e:
        raise InputError(f"{what} {_show(path)}: {_os_reason(e)}") from None


def path_arg(value) -> Path:
    """A path given on the command line. Typer turns "" (an unset shell variable, say) into Path("."),
    and a command would then index, or write into, the current folder: an empty path is an error."""
    if not str(value).strip():
        raise typer.BadParameter("the path is empty")
    if "\x00" in str(value):
        raise typer.BadParameter("the path holds a null byte, which no file name can")
    return Path(value)


def _check_inputs(paths: List[Path], what: str = "path") -> None:
    """Every path exists and is a regular file or a folder (a FIFO or device would block a reader)."""
    missing, odd, unreadable = [], [], []
    for p in paths:
        st = _stat(p, what)
        if st is None:
            missing.append(p)
        elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            odd.append(p)
        elif not os.access(p, os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0)):
            unreadable.append(p)

    def listed(ps: List[Path]) -> str:
        return ", ".join(map(_show, ps[:5])) + (f" and {len(ps) - 5} more" if len(ps) > 5 else "")

    if missing:
        raise InputError(f"{what}{'s' if len(missing) > 1 else ''} not found: {listed(missing)}")
    if odd:
        raise InputError(f"not a regular file or folder (a FIFO, socket or device?): {listed(odd)}")
    if unreadable:
        raise InputError(f"permission denied (not readable): {listed(unreadable)}")


def _check_file(path: Path, what: str) -> None:
    st = _stat(path, what)
    if st is None:
        raise InputError(f"{what} not found: {_show(path)}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {_show(path)} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {_show(path)} is not readable (permission denied)")


def _check_out(out: Path, what: str = "an index") -> None:
    """`out` is a folder or can be made there (the library's own check, run before any model loads)."""
    from unified_rag.io import check_save_target

    check_save_target(out, what)


def _check_positive(**values: Optional[float]) -> None:
    """Each given value is >= 1 (None means: not given). Keyword names are option names, '_' for '-'."""
    for name, v in values.items():
        if v is not None and v < 1:
            flag = ("-" if len(name) == 1 else "--") + name.replace("_", "-")
            raise InputError(f"{flag} must be at least 1, got {v}")


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} is not valid text: it holds undecodable bytes or lone surrogates") from None
    if not text.strip():
        raise InputError(f"{what} is empty")


def _check_embedder(spec: str) -> None:
    """A kind name or an adapter dir (one holding embedder_config.json)."""
    if spec in EMBEDDER_KINDS:
        return
    try:
        is_adapter = stat.S_ISREG(os.stat(Path(spec) / EMBEDDER_CONFIG).st_mode)
    except (OSError, ValueError):
        is_adapter = False
    if not is_adapter:
        raise InputError(f"unknown embedder {_show(spec, 80)!s}: use one of {', '.join(EMBEDDER_KINDS)}, "
                         f"or an adapter dir (a folder holding {EMBEDDER_CONFIG})")


def _check_index_dir(index_dir: Path, k: Optional[int] = None):
    """The manifest of a saved index (read without loading the model); checks k against its size."""
    _check_positive(k=k)
    st = _stat(index_dir, "index dir")
    if st is None:
        raise InputError(f"index dir not found: {_show(index_dir)}")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{_show(index_dir)} is not an index dir (not a folder)")
    m_st = _stat(index_dir / MANIFEST_NAME, "index dir")
    if m_st is None or not stat.S_ISREG(m_st.st_mode):  # the common mistake, told without importing torch
        raise IndexLoadError(f"{_show(index_dir)} is not a unified-rag index: {MANIFEST_NAME} is missing")
    from unified_rag.rag import UnifiedRAG

    m = UnifiedRAG.read_manifest(index_dir)
    if k is not None:
        if m.n_chunks == 0:
            raise EmptyCorpusError(f"the index {_show(index_dir)} is empty: add documents first")
        if k > m.n_chunks:
            raise InputError(f"-k {k} but the index holds only {m.n_chunks} chunks")
    return m


def _validation_message(e, names: Optional[dict] = None) -> str:
    """A pydantic ValidationError on one line, naming the fields (or the CLI options set from them)."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        loc = (names or {}).get(loc, loc)
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return _one_line("invalid settings: " + "; ".join(parts))


# --- one-line errors and warnings ----------------------------------------------------------------
def _say_error(message: object) -> None:
    typer.secho(f"error: {_one_line(message)}", fg="red", err=True)


def _error(message: object, code: int = 2) -> typer.Exit:
    """Print the one line; the caller raises the returned Exit."""
    _say_error(message)
    return typer.Exit(code)


def _friendly(fn=None, *, interrupted: str = "interrupted"):
    """Turn typed errors (the library's, pydantic's, the filesystem's) into one `error:` line and exit
    code 2; Ctrl-C into one line and exit code 130."""
    if fn is None:
        return functools.partial(_friendly, interrupted=interrupted)

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from pydantic import ValidationError

        try:
            return fn(*a, **kw)
        except UnifiedRAGError as e:
            raise _error(e) from None
        except ValidationError as e:
            raise _error(_validation_message(e)) from None
        except OSError as e:
            if e.errno == errno.EPIPE:  # stdout closed (`| head`): typer exits quietly
                raise
            raise _error(_os_message(e)) from None
        except KeyboardInterrupt:
            typer.secho(interrupted, fg="yellow", err=True)
            raise typer.Exit(130) from None
    return wrapper


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.secho(f"warning: {_one_line(message)}", fg="yellow", err=True)


@contextlib.contextmanager
def _clean_warnings() -> Iterator[None]:
    """While the CLI runs, a warning prints as one `warning: ...` line, not a source location and code."""
    old, warnings.showwarning = warnings.showwarning, _showwarning
    try:
        yield
    finally:
        warnings.showwarning = old


# --- help without type placeholders, usage errors on one line ------------------------------------
def _metavar(p) -> str:
    d = getattr(p, "type_descriptor", None)
    if d is None:  # older typer: a click ParamType
        name = getattr(getattr(p, "type", None), "name", "text")
    elif d.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in d.choices or ()) + "]"
    elif d.is_path:
        return {"file": "FILE", "directory": "DIR", "dir": "DIR"}.get(str(d.path_type), "PATH")
    else:
        ann = get_args(d.annotation)[0] if d.is_list and get_args(d.annotation) else d.annotation
        name = getattr(ann, "__name__", "text")
    return {"int": "INTEGER", "str": "TEXT", "path": "PATH"}.get(name.lower(), name.upper())


class _Argument(TyperArgument):
    """A positional argument shown as NAME (usage) and NAME plus its help (panel), not {name} <type>."""

    def display_type_rich(self, ctx) -> None:
        return None

    def _usage_display_name(self) -> str:
        return self.metavar if self.required else f"[{self.metavar}]"


def _tidy(cmd) -> None:
    """Metavars in click's plain style: flags show none, values their type (INTEGER, PATH, [a|b])."""
    for p in cmd.params:
        if isinstance(p, TyperArgument):
            if p.metavar is None:
                p.metavar = p.name.upper() + ("..." if p.nargs != 1 else "")
            if type(p) is TyperArgument:
                p.__class__ = _Argument
        elif getattr(p, "is_flag", False) or getattr(p, "count", False):
            p.metavar = ""
        elif p.metavar is None:
            p.metavar = _metavar(p)
    for sub in getattr(cmd, "commands", {}).values():
        if type(sub) is TyperCommand:
            sub.__class__ = _Command
        elif type(sub) is TyperGroup:
            sub.__class__ = _Group
        _tidy(sub)


def _help_option(opt):
    if opt is not None:
        opt.metavar = ""  # a flag: no <bool>
    return opt


class _Command(TyperCommand):
    def get_help_option(self, ctx):
        return _help_option(super().get_help_option(ctx))


class _Group(TyperGroup):
    """The top-level group: tidies every command's help, and prints usage errors as one line."""

    def get_help_option(self, ctx):
        return _help_option(super().get_help_option(ctx))

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        _tidy(self)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        with _clean_warnings():
            if not standalone_mode:
                return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except NoArgsIsHelpError as e:  # the help text is the message (rich has printed it already)
                if e.format_message().strip():
                    typer.echo(e.format_message(), err=True)
                sys.exit(e.exit_code)
            except ClickException as e:
                ctx = getattr(e, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                _say_error(e.format_message().replace("Value error, ", "") + hint)
                sys.exit(e.exit_code)
            except typer.Abort:
                typer.secho("aborted", fg="yellow", err=True)
                sys.exit(1)
            sys.exit(rv if isinstance(rv, int) else 0)


def _quiet(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  help="RAG where one decoder LLM embeds the corpus, embeds the query and writes the answer.")

Verbose = typer.Option(False, "--verbose", "-v", help="Log what happens (device, dtype, GPU index).")
NOT_SAVED = "interrupted: nothing was saved, the last saved index is intact"


# index's layout options, as the command line names them: they shape a new index only
LAYOUT_OPTIONS = {"kind": "--index-kind", "nlist": "--nlist", "nprobe": "--nprobe", "hnsw_m": "--hnsw-m",
                  "ef_search": "--ef-search", "milvus_uri": "--milvus-uri",
                  "chunk_tokens": "--chunk-tokens", "overlap_tokens": "--overlap"}


def _check_same_layout(out: Path, stored, index_cfg, chunk_cfg) -> None:
    """Adding to an index keeps the layout it was built with. An option set to something other than
    its default that disagrees with the stored layout would be silently ignored, so it is refused."""
    clash = [f"{flag} {getattr(given, k)} (the index has {getattr(have, k)})"
             for given, have in [(index_cfg, stored.index), (chunk_cfg, stored.chunking)]
             for k, flag in LAYOUT_OPTIONS.items() if k in type(given).model_fields
             and getattr(given, k) != type(given).model_fields[k].default and getattr(given, k) != getattr(have, k)]
    if clash:
        raise InputError(f"{out} already holds an index, and adding keeps its layout: {'; '.join(clash)}. "
                         "Drop these options, or index into a new --out")


@app.command()
@_friendly(interrupted=NOT_SAVED)
def index(paths: List[Path] = typer.Argument(..., parser=path_arg, help="Files or folders: .txt, .md, .jsonl (BEIR corpus.jsonl too)."),
          out: Path = typer.Option(..., "--out", "-o", parser=path_arg, help="Index dir. If it holds an index, documents are added."),
          model: Optional[str] = typer.Option(None, help="Backbone: HF id or dir, .gguf. Default: "
                                              "SmolLM2-135M-Instruct."),
          embedder: str = typer.Option("auto", help=f"One of {', '.join(EMBEDDER_KINDS)}, or an adapter dir "
                                       f"(a folder holding {EMBEDDER_CONFIG})."),
          chunk_tokens: int = typer.Option(256, help="Tokens per chunk (at least 8)."),
          overlap: int = typer.Option(32, help="Tokens shared by neighbouring chunks (smaller than --chunk-tokens)."),
          index_kind: IndexKind = typer.Option(IndexKind.flat, help="flat: exact search; ivf: clustered, approximate "
                                               "(exact until it holds 39 x --nlist chunks, then trains); hnsw: graph; milvus: a "
                                               "Milvus collection (embedded Milvus Lite, or --milvus-uri)."),
          milvus_uri: Optional[str] = typer.Option(None, help="milvus: a server's URI, e.g. http://host:19530 "
                                                   "(token from MILVUS_TOKEN); default: embedded Milvus Lite."),
          nlist: int = typer.Option(1024, help="ivf: number of clusters."),
          nprobe: int = typer.Option(16, help="ivf: clusters visited per query."),
          hnsw_m: int = typer.Option(32, help="hnsw: neighbours per node."),
          ef_search: Optional[int] = typer.Option(None, help="hnsw: candidate list size per query (default: "
                                                  "scaled with the index size, for recall@10 >= 0.95)."),
          batch_size: int = typer.Option(32, help="Chunks embedded per forward pass."),
          engine: Engine = typer.Option(Engine.local, help="local: this process; ray: chunk and encode on Ray "
                                        "Data (one backbone per actor), then index here."),
          address: Optional[str] = typer.Option(None, help="ray: a running cluster ('auto', 'ray://host:10001'); "
                                                "default: a local Ray."),
          actors: int = typer.Option(2, help="ray: encoding actors (one GPU each when the cluster has GPUs)."),
          reembed: bool = typer.Option(False, "--reembed", help="Embed again documents already in the index "
                                       "unchanged (same id, source, metadata and chunks); by default they are skipped."),
          save_every: float = typer.Option(10.0, help="local: also save (atomically) when this many minutes have "
                                           "passed since the last save, so an interrupted run continues where it "
                                           "was when the same command runs again. 0: save at the end only."),
          verbose: bool = Verbose):
    """Chunk, embed and index documents, then save atomically. Running the same command again adds only
    what is new or changed, which is also how an interrupted run continues."""
    _check_positive(batch_size=batch_size, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search,
                    actors=actors)
    if not save_every >= 0:  # also refuses nan
        raise InputError(f"--save-every must be 0 or more minutes, got {save_every}")
    _check_inputs(list(paths))
    _check_out(out)
    _check_embedder(embedder)
    from pydantic import ValidationError

    from unified_rag.chunking import ChunkConfig
    from unified_rag.index import IndexConfig

    try:
        index_cfg = IndexConfig(kind=index_kind.value, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search,
                                milvus_uri=milvus_uri)
        chunk_cfg = ChunkConfig(chunk_tokens=chunk_tokens, overlap_tokens=overlap)
    except ValidationError as e:
        raise InputError(_validation_message(e, {"chunk_tokens": "--chunk-tokens", "overlap_tokens": "--overlap"})) \
            from None
    _quiet(verbose)
    from unified_rag.rag import MANIFEST, UnifiedRAG

    if (out / MANIFEST).is_file():
        stored = UnifiedRAG.read_manifest(out)  # a corrupt index is reported before the model loads
        _check_same_layout(out, stored, index_cfg, chunk_cfg)
        rag = UnifiedRAG.load(out, model=model, embedder=None if embedder == "auto" else embedder)
        typer.echo(f"adding to {out} ({len(rag)} documents)")
    else:
        rag = UnifiedRAG.from_pretrained(model, embedder=embedder, index=index_cfg, chunking=chunk_cfg)
    if engine is Engine.ray:
        from unified_rag.ray_engine import add_documents_ray

        ids = add_documents_ray(rag, list(paths), model=model, address=address, actors=actors, batch_size=batch_size)
    else:
        ids = _add_saving(rag, paths, out, batch_size=batch_size, skip_unchanged=not reembed, save_every=save_every)
    rag.save(out)
    i = rag.info()
    typer.echo(f"indexed {len(ids)} documents; {out} now holds {i['documents']} documents, {i['chunks']} chunks "
               f"({i['embedder']}, dim {i['dim']})")


def _add_saving(rag, paths, out: Path, *, batch_size: int, skip_unchanged: bool, save_every: float) -> list[str]:
    """rag.add_documents, saving whenever `save_every` minutes have passed since the last save. Ctrl-C
    after a save says what the index holds and how to continue."""
    last_save, saved = time.monotonic(), None  # saved: (clock time, documents) of the last save, if any

    def save_when_due():
        nonlocal last_save, saved
        if save_every and time.monotonic() - last_save >= save_every * 60:
            rag.save(out)
            last_save, saved = time.monotonic(), (time.strftime("%H:%M:%S"), len(rag))

    try:
        return rag.add_documents(list(paths), batch_size=batch_size, show_progress_bar=True,
                                 skip_unchanged=skip_unchanged, on_commit=save_when_due)
    except KeyboardInterrupt:
        if saved is None:
            raise
        typer.secho(f"interrupted: {out} holds the {saved[1]} documents saved at {saved[0]}; run the same command "
                    "again to continue (documents already indexed unchanged are skipped)", fg="yellow", err=True)
        raise typer.Exit(130) from None


IndexDir = typer.Argument(..., parser=path_arg, help="An index dir written by `unified-rag index`.")


@app.command()
@_friendly
def search(index_dir: Path = IndexDir, query: str = typer.Argument(..., help="What to look for."),
           k: int = typer.Option(5, "-k", help="Hits to return."),
           mode: Mode = ModeOption,
           as_json: bool = typer.Option(False, "--json", help="One JSON object per hit."), verbose: bool = Verbose):
    """Retrieve the chunks nearest to a query."""
    _check_text(query, "the query")
    _check_index_dir(index_dir, k)
    _quiet(verbose)
    from unified_rag.rag import UnifiedRAG

    for h in UnifiedRAG.load(index_dir).retrieve(query, k, mode=mode.value):
        if as_json:
            typer.echo(h.model_dump_json())
        else:
            snippet = " ".join(h.text.split())[:160]
            typer.echo(f"{h.rank:>2}. {h.score:.3f}  {h.doc_id}\n    {snippet}")


@app.command()
@_friendly
def ask(index_dir: Path = IndexDir, question: str = typer.Argument(..., help="The question to answer."),
        k: int = typer.Option(5, "-k", help="Sources retrieved; only those passing the relevance cut are used."),
        max_new_tokens: int = typer.Option(256, help="Longest answer, in tokens."), mode: Mode = ModeOption,
        extractive: bool = typer.Option(False, "--extractive", help="Quote the source sentences nearest the "
                                        "question instead of generating."),
        min_relevance: Optional[float] = typer.Option(None, help="Cosine a source needs to be used (default: the "
                                                      "embedder's calibrated cut; -1 uses every source)."),
        stream: bool = typer.Option(True, help="Print as it is generated."), verbose: bool = Verbose):
    """Answer a question from the index, citing numbered sources, or say it cannot."""
    _check_positive(max_new_tokens=max_new_tokens)
    _check_text(question, "the question")
    if min_relevance is not None and not -1 <= min_relevance <= 1:
        raise typer.BadParameter("a cosine in [-1, 1]", param_hint="--min-relevance")
    _check_index_dir(index_dir, k)
    _quiet(verbose)
    from unified_rag.rag import UnifiedRAG

    rag = UnifiedRAG.load(index_dir)
    if min_relevance is not None:
        rag.min_relevance = min_relevance
    if stream and not extractive:
        s = rag.stream_answer(question, k=k, max_new_tokens=max_new_tokens, retrieval=mode.value)
        streamed = "".join(_echo_pieces(s)).strip()
        ans = s.answer
        if ans.text != streamed:  # citations were attributed after the text was generated
            typer.echo(f"\nWith citations: {ans.text}")
    else:
        ans = rag.answer(question, k=k, max_new_tokens=max_new_tokens, retrieval=mode.value,
                         mode="extractive" if extractive else "generative")
        typer.echo(ans.text)
    if not ans.sources:
        return
    origin = {c.source: c.origin for c in sorted(ans.citations, key=lambda c: c.origin != "model")}
    typer.echo("\nSources: (* cited by the model, + attributed by embedding, > quoted)")
    for h in ans.sources:
        mark = {"model": "*", "attributed": "+", "extracted": ">"}.get(origin.get(h.rank), " ")
        typer.echo(f"{mark}[{h.rank}] {h.doc_id}  (score {h.score:.3f}, relevance {h.relevance:.3f})")


def _echo_pieces(stream):
    for piece in stream:
        typer.echo(piece, nl=False)
        sys.stdout.flush()
        yield piece
    typer.echo()


@app.command()
@_friendly
def info(index_dir: Path = IndexDir):
    """Show what an index holds and what built it (no model is loaded)."""
    m = _check_index_dir(index_dir)
    typer.echo(json.dumps(m.model_dump(mode="json", exclude={"files"}), indent=2))


@app.command()
@_friendly
def verify(index_dir: Path = IndexDir):
    """Check every file of a saved index against its SHA-256 (load() checks only presence and sizes)."""
    m = _check_index_dir(index_dir)
    from unified_rag.rag import UnifiedRAG

    UnifiedRAG.verify(index_dir, m)
    typer.echo(f"ok: {len(m.files)} files of {_show(index_dir)} match their checksums")


@app.command()
@_friendly
def standardize(texts: List[Path] = typer.Argument(..., parser=path_arg, help="Unlabelled texts, one per line (.txt, .tsv id<TAB>text, .jsonl)."),
                out: Path = typer.Option(..., "--out", "-o", parser=path_arg, help="Adapter dir to write."),
                model: Optional[str] = typer.Option(None, help="Backbone (default: offline SmolLM2)."),
                pooling: Pooling = typer.Option(Pooling.mean, help="Untrained pooling to standardise."),
                layers: Optional[str] = typer.Option(None, help="Hidden layers to pool, a comma list (0: embeddings; "
                                                     "default: the last); several are concatenated."),
                limit: int = typer.Option(4000, help="Texts to use, sampled with --seed."),
                seed: int = typer.Option(0, help="Seed of the sample."), verbose: bool = Verbose):
    """Fit per-dimension standardisation of an untrained pooling and save it as an adapter dir."""
    _check_positive(limit=limit)
    try:
        picked = None if layers is None else [int(x) for x in layers.split(",")]
    except ValueError:
        raise InputError(f"--layers must be a comma list of integers, got {layers!r}") from None
    _check_inputs(list(texts))
    _check_out(out, "an adapter")
    _quiet(verbose)
    import random

    from embedders import EMBEDDERS
    from unified_rag.backbone import Backbone
    from trainers.data import read_texts

    pool = [t for _, t in read_texts(texts)]
    random.Random(seed).shuffle(pool)
    emb = EMBEDDERS[pooling.value](Backbone.from_pretrained(model), **({} if picked is None else {"layers": picked}))
    # Queries are embedded with the query instruction, so the statistics describe that input.
    emb.fit_standardization(pool[:limit], instruction=emb.config.query_instruction, show_progress_bar=True)
    emb.save_pretrained(out)
    typer.echo(f"fitted {EMBEDDERS[pooling.value].__name__} standardisation on {min(limit, len(pool))} texts -> {out}")


@app.command(name="export-adapter")
@_friendly
def export_adapter(adapter: Path = typer.Argument(..., parser=path_arg, help="Adapter dir (embedder_config.json + adapter.safetensors)."),
                   out: Path = typer.Option(..., "--out", "-o", parser=path_arg, help="Adapter dir to write."),
                   dtype: DType = typer.Option(DType.bf16, help="Storage dtype of the floating tensors.")):
    """Copy an adapter dir with its tensors stored in another dtype (bf16 halves a shipped adapter)."""
    _check_file(adapter / "embedder_config.json", "adapter config")
    _check_out(out, "an adapter")
    import torch

    from embedders.base import cast_adapter

    cast_adapter(adapter, out, {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype.value])
    typer.echo(f"{adapter} -> {out} ({dtype.value})")


def _add_subcommands() -> None:
    """`train` and `bench` live with their packages; they import heavy modules only when run."""
    import importlib

    for module, name in (("trainers.cli", "train"), ("benchmarks.cli", "bench")):
        try:
            sub = importlib.import_module(module).app
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        app.add_typer(sub, name=name)


_add_subcommands()

if __name__ == "__main__":
    app()
