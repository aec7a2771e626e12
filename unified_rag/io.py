"""Small file helpers: atomic writes and hashes. A killed process never leaves a half-written file."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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
def atomic_dir(final: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """A temp folder beside `final` to fill inside the block, renamed to `final` in one step when the
    block ends without error, and removed otherwise: `final` is never seen half-written.
    replace=True: a `final` already there is replaced. replace=False: one that appeared meanwhile
    (another process finished first) is kept, and this one dropped."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if replace:
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if replace or not final.exists():
                raise
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
