"""Atomic output files: written under a temporary name beside the target, renamed when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputPathError


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written (creating its folder); return it."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputPathError(
            f"Output '{path}' exists already; choose another path or allow overwriting."
        )
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"Output folder '{folder}' cannot be created: {error}") from error
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"Output folder '{folder}' is not writable.")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, folder: bool) -> None:
    """Give a temporary file or folder the mode a plain open()/mkdir() would have: mkstemp
    and mkdtemp make them private (0600/0700), unreadable to colleagues on a shared server."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False,
                  suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on any error
    (cancel included) it is removed and ``path`` is left as it was."""
    path = check_output_path(path, overwrite)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        _as_if_created(temporary, folder=False)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _previous(path: Path) -> Path:
    return path.parent / f".{path.name}.previous"


@contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``path`` in one rename.

    An existing ``path`` is first renamed aside and removed only after the new folder is in
    place, so a kill at any moment leaves either folder; :func:`recover_folder` restores the
    previous one if the kill fell between the two renames.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputPathError(f"Output '{path}' exists already; choose another path or allow "
                              "overwriting.")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    previous = _previous(path)
    try:
        yield staging
        _as_if_created(staging, folder=True)
        shutil.rmtree(previous, ignore_errors=True)
        if path.exists():
            os.replace(path, previous)
        os.replace(staging, path)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def recover_folder(path: str | os.PathLike) -> Path:
    """Put back the previous version of a folder written by :func:`atomic_folder` if a kill
    left only that one; return ``path``."""
    path = Path(path)
    previous = _previous(path)
    if not path.exists() and previous.is_dir():
        os.replace(previous, path)
    return path
