"""Atomic file writes: a file is either its old complete self or its new complete self, never half-written.

Write to a temporary file in the same folder, flush and fsync it, then ``os.replace`` it over the target (atomic
on POSIX and Windows). If anything fails before the rename, the temporary file is removed and the target is
untouched. A failure of the file system itself (full, read-only, no permission) is a :class:`WriteError` that names
the file, whichever library was writing it.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)


class WriteError(OSError):
    """Writing a file failed for a reason of the file system (no space left, read-only, no permission, a file size
    limit): ``errno``, ``strerror`` and ``filename`` say which (the file asked for, never the temporary one beside
    it). The file's previous version is intact."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}; choose a writable location"


def os_error_of(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc``: ``exc`` itself, one it was raised from or during (a writer that
    wraps it, as ``torch.save`` does), or the ``(os error N)`` that safetensors' writer names in its message."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        match = re.search(r"\(os error (\d+)\)", str(seen))
        if match:
            code = int(match.group(1))
            return OSError(code, os.strerror(code))
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on error it vanishes.

    A failure of the file system (the disk is full, a read-only mount, no permission) is a :class:`WriteError`
    naming ``path``, whatever writer met it; other errors pass unchanged."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except WriteError:
        raise
    except Exception as exc:
        cause = os_error_of(exc)
        if cause is None:
            raise
        raise WriteError(cause.errno, cause.strerror or str(cause), str(path)) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def marked_block(name: str, text: str) -> str:
    """``text`` between the markers ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, each on its own line."""
    return f"<!-- {name}:begin -->\n{text.strip()}\n<!-- {name}:end -->"


def write_marked_block(path: str | os.PathLike, name: str, text: str) -> None:
    """Put ``text`` between the markers of block ``name`` in the markdown file ``path`` (see :func:`marked_block`),
    replacing what was there; appended with its markers if the file or the block is missing. The rest of the file
    is untouched and the write is atomic. Benchmark scripts keep their tables in docs/benchmarks.md this way, and
    benchmarks/run_benchmarks.py carries every marked block over when it regenerates the page."""
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.is_file() else ""
    block = marked_block(name, text)
    head, found, rest = old.partition(begin)
    if found and end in rest:
        new = head + block + rest.partition(end)[2]
    else:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + block + "\n"
    atomic_write_text(path, new)
