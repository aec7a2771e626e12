"""The CLI's checks and its one-line errors: every argument, path and option is checked before the
model is loaded (that takes 5-24 s), so a mistake costs a second, not a load. Each mistake prints one
`error: ...` line on stderr and exits with code 2; Ctrl-C prints one line and exits with 130; library
warnings print as one `warning: ...` line. Public: the command groups of other packages (train,
bench) use these too.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from unified_rag.errors import EmptyCorpusError, IndexLoadError, InputError, UnifiedRAGError
from unified_rag.hub import looks_like_hub_id
from unified_rag.registry import names
from unified_rag.types import RETRIEVAL_MODES

try:  # typer >= 0.20 ships its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click.exceptions import ClickException

    try:
        from click.exceptions import NoArgsIsHelpError
    except ImportError:
        NoArgsIsHelpError = ()  # type: ignore[assignment,misc]

# `--embedder` kinds, read from the registry's entry points (no torch import: `--help` stays fast).
EMBEDDER_KINDS = ("auto", *names("embedders"))
EMBEDDER_CONFIG = "embedder_config.json"  # embedders.base.CONFIG_NAME: marks an adapter dir
MANIFEST_NAME = "manifest.json"  # unified_rag.rag.MANIFEST


IndexKind = Enum("IndexKind", {k: k for k in names("vector_stores")}, type=str)  # the registered stores


class Engine(str, Enum):
    local = "local"
    ray = "ray"


Mode = Enum("Mode", {m: m for m in RETRIEVAL_MODES}, type=str)  # the retriever's own list


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
    """A kind name, an adapter dir (one holding embedder_config.json), a published one (a peft
    adapter_config.json: LLM2Vec's supervised release), or a hub id (user/adapter)."""
    if spec in EMBEDDER_KINDS:
        return
    is_adapter = False
    for name in (EMBEDDER_CONFIG, "adapter_config.json"):
        try:
            is_adapter = is_adapter or stat.S_ISREG(os.stat(Path(spec) / name).st_mode)
        except (OSError, ValueError):
            pass
    if not (is_adapter or looks_like_hub_id(spec)):
        raise InputError(f"unknown embedder {_show(spec, 80)!s}: use one of {', '.join(EMBEDDER_KINDS)}, "
                         f"an adapter dir (a folder holding {EMBEDDER_CONFIG}), or a hub id (user/adapter)")


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


# The public names of the helpers other command groups use.
friendly, check_file, check_inputs, check_out = _friendly, _check_file, _check_inputs, _check_out
check_positive, quiet, validation_message = _check_positive, _quiet, _validation_message
