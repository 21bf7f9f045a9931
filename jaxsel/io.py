"""Atomic file writes: a temporary file in the target folder, then ``os.replace``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def writes_files() -> bool:
    """Whether this process writes files: not when it is a non-zero process of a multi-process
    run (:mod:`jaxsel.distributed`); checked without importing jax (the CLI starts without it)."""
    if "jax" not in sys.modules:
        return True
    from jaxsel.distributed import primary
    return primary()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "", *, folder: bool = False):
    """Yield a temporary path beside ``path`` (an empty folder with ``folder``, one that replaces a
    folder already at ``path``); on success rename it onto ``path``, else delete it. In a
    multi-process run only process 0 writes: the others get a scratch path that is discarded."""
    path = Path(path)
    if not writes_files():
        with tempfile.TemporaryDirectory(prefix="jaxsel-discard-") as scratch:
            tmp = Path(scratch) / path.name
            if folder:
                tmp.mkdir()
            yield tmp
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if folder:
            tmp = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")
        else:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
            os.close(fd)
    except OSError as e:  # name the file asked for, not the temporary one
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o755 if folder else 0o644)  # mkstemp/mkdtemp make them private; the result is ordinary
        if folder and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
