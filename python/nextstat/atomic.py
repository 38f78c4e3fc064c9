"""Atomic file writes: a reader sees the old file or the complete new one, never a partly
written file (the contract of every command and ``save`` method that writes)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _new_file_mode(path: Path) -> int:
    """Permission bits for ``path``: those of the file it replaces, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success move it onto ``path``.

    ``os.replace`` makes the write atomic: readers see the old file or the complete new one.
    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _new_file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Save a matplotlib figure to ``path`` atomically, in the format named by its suffix."""
    fmt = Path(path).suffix[1:].lower()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
