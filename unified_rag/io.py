"""Small file helpers: atomic writes, hashes and the one JSON-lines reader. A killed process never
leaves a half-written file."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import InputError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved file should read like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextmanager
def atomic_dir(final: str | os.PathLike, *, replace: bool = True,
               remove: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A temp folder beside `final` (`.<name>.tmp-<32 hex>`) to fill inside the block; when the block
    ends without error its files and folders are synced and it is renamed to `final` in one step, and
    otherwise removed: `final` is never seen half-written, nor lost to a power cut after the rename.
    replace=True: a `final` already there is replaced. replace=False: one that appeared meanwhile
    (another process finished first) is kept, and this one dropped. `remove(tmp)`: how a failed
    block's folder is deleted (default: rmtree), for callers whose cleanup must survive a kill midway."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir(mode=0o777)  # the umask applies, as to any folder (mkdtemp would give 0700)
    try:
        yield tmp
        for p in sorted(tmp.rglob("*"), reverse=True):  # files before the folders that hold them
            if p.is_symlink():
                continue
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            elif p.is_dir():
                _fsync_dir(p)
        _fsync_dir(tmp)
        if replace:
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if replace or not final.exists():
                raise
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            (remove or (lambda d: shutil.rmtree(d, ignore_errors=True)))(tmp)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def check_save_target(path: str | os.PathLike, what: str = "an index") -> Path:
    """Check early, before any embedding work, that `what` (a folder) can be saved to `path`: it is not an
    existing file, its nearest existing ancestor is a writable folder (so the missing ones can be
    made), and no name in it is too long for the filesystem. Creates nothing; returns the path.
    Raises InputError naming the path and the fix."""
    p = Path(path).expanduser()
    try:
        os.fsencode(p)
    except UnicodeEncodeError:
        raise InputError(f"cannot save {what} to {str(p)!r}: it is not a valid file name") from None
    if "\x00" in str(p):
        raise InputError(f"cannot save {what} to {str(p)!r}: a file name cannot hold a NUL byte")
    if not str(path).strip():
        raise InputError(f"the path for {what} is empty: pass a folder")
    anc = p  # the nearest existing ancestor ("." for a relative path); os.path.exists never raises
    while not os.path.exists(anc) and anc != anc.parent:
        anc = anc.parent
    try:
        name_max = os.pathconf(anc, "PC_NAME_MAX")
        path_max = os.pathconf(anc, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        name_max, path_max = 255, 4096
    for part in p.parts:
        if len(os.fsencode(part)) > name_max:
            raise InputError(f"cannot save {what} to {p}: the name {part[:40]!r}... is {len(os.fsencode(part))} "
                             f"bytes, longer than this filesystem allows ({name_max}); use a shorter name")
    if len(os.fsencode(os.path.abspath(p))) + 64 > path_max:  # room for the files inside the index
        raise InputError(f"cannot save {what} to {p}: the path is too long for this filesystem "
                         f"({path_max} bytes at most, files inside included); use a shorter path")
    if os.path.exists(p) and not os.path.isdir(p):
        raise InputError(f"cannot save {what} to {p}: it is an existing file, and it must be a folder: "
                         "pass a new folder path or an existing one")
    if os.path.islink(p) and not os.path.exists(p):
        raise InputError(f"cannot save {what} to {p}: it is a symbolic link to a missing target; "
                         "remove the link or pass another path")
    if not os.path.isdir(anc):
        raise InputError(f"cannot save {what} to {p}: {anc} is a file, so the folder cannot be created there; "
                         "pick a path under a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        what = "the folder" if anc == p else f"{anc}, where the folder would be created,"
        raise InputError(f"cannot save {what} to {p}: {what} is not writable; pick a writable location "
                         "or fix its permissions")
    return p


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_hash(text: str, n: int = 16) -> str:
    """The first n hex digits of a text's SHA-256: document ids of raw strings, cache keys."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


# --- reading: one reader of text lines and JSON lines for every caller --------------------------------
def read_lines(path: str | os.PathLike) -> list[str]:
    """A UTF-8 text file's lines (gzip when it ends in .gz); InputError naming the file otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"data file not found: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read data file {path}: {e.strerror}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise InputError(f"{path} is not a valid gzip file: {e}") from None
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


def json_object(line: str) -> dict | None:
    """The JSON object on a line, or None for anything else (invalid JSON, a list, nesting too deep)."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def read_jsonl(path: str | os.PathLike, *, strict: bool = True) -> list[dict]:
    """Every object of a .jsonl(.gz) file, blank lines skipped. strict: a bad line is an InputError naming
    it; otherwise it is dropped (a cache whose writer was killed mid-line regenerates that row)."""
    rows = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        obj = json_object(line)
        if obj is None:
            if strict:
                raise InputError(f"{path}:{n} is not a JSON object; the file must hold one object per line")
            continue
        rows.append(obj)
    return rows
