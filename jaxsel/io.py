"""Atomic file writes (a temporary file in the target folder, then ``os.replace``), and cache files
read back (:func:`read_cached`: an unreadable one is computed again)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import functools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from jaxsel.errors import JaxselError, OutputError

log = logging.getLogger(__name__)

T = TypeVar("T")


def writes_files() -> bool:
    """Whether this process writes files: not when it is a non-zero process of a multi-process
    run (:mod:`jaxsel.distributed`); checked without importing jax (the CLI starts without it)."""
    if "jax" not in sys.modules:
        return True
    from jaxsel.distributed import primary
    return primary()


NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF, errno.EINVAL}  # flock on NFS, CIFS, ...


def _locked(fcntl, fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` without waiting: False when another process holds it;
    True when taken, or when the file system has no locks (:data:`NO_LOCKS`: going on unlocked)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno not in NO_LOCKS:
            raise
    return True


@contextlib.contextmanager
def exclusive(folder: str | Path):
    """Hold an advisory lock (``flock``) on ``folder``, made if missing, while writing into it:
    raise JaxselError at once if another process holds it (two runs writing one output folder
    delete each other's temporaries and mix their checkpoints). The kernel releases it when the
    process ends, even by ``kill -9``, so no stale lock is left. A no-op without ``fcntl``
    (Windows), on file systems without locks, and in processes that do not write files
    (:func:`writes_files`)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    if not writes_files():
        yield
        return
    folder = Path(os.path.abspath(folder))
    made = [d for d in (folder, *folder.parents) if not d.exists()]  # removed again if left empty
    ensure_folder(folder, folder)
    fd = os.open(folder, os.O_RDONLY)
    try:
        if not _locked(fcntl, fd):
            raise JaxselError(f"{folder} is being written by another jaxsel process: wait for it to finish or "
                              f"choose another output folder")
        yield
    finally:
        os.close(fd)
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()  # only succeeds when empty


_STAGES_HELD: set[Path] = set()  # the stage folders this process has locked (stage_lock)


@contextlib.contextmanager
def stage_lock(folder: str | Path, note_every: float = 600.0):
    """Hold an advisory lock (``flock``) on a stage's ``folder``, made if missing, while computing it;
    when another process holds it (a run sharing the stage folder computes this stage now), say so on
    stderr, again every ``note_every`` seconds, and wait. Yields whether it waited: the other process's
    result may then be there to reuse. A lock made on a folder removed and made again meanwhile is taken
    again. Nothing is locked (yields False) without ``fcntl`` (Windows), on file systems without locks,
    in a multi-process run (its processes decide together whether a stage is cached: process 0 alone
    waiting would part them) or on a folder this process already holds."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    folder = Path(os.path.abspath(folder))
    jax = sys.modules.get("jax")
    if folder in _STAGES_HELD or not writes_files() or (jax is not None and jax.process_count() > 1):
        yield False
        return
    ensure_folder(folder, folder)
    waited, start, said = False, time.monotonic(), 0.0
    while True:
        fd = os.open(folder, os.O_RDONLY)
        try:
            taken = _locked(fcntl, fd)
        except OSError:
            os.close(fd)
            raise
        if not taken:
            os.close(fd)
            if not waited or time.monotonic() - said >= note_every:
                spent = time.monotonic() - start
                so_far = "" if not waited else f" ({spent:.0f} s so far)" if spent < 120 else f" ({spent / 60:.0f} minutes so far)"
                log.info(f"another jaxsel process is computing {folder}: waiting for it{so_far}")
                waited, said = True, time.monotonic()
            time.sleep(0.25)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(folder).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # removed (and maybe made again) while this process waited: lock the folder there now
        ensure_folder(folder, folder)
    _STAGES_HELD.add(folder)
    try:
        yield waited
    finally:
        _STAGES_HELD.discard(folder)
        os.close(fd)


@contextlib.contextmanager
def computed_once(folder: str | Path, path: str | Path, load: Callable[[Path], T]):
    """A stage's cached result, ``read_cached(path, load)``, else None with the stage's ``folder``
    locked (:func:`stage_lock`) for the caller to compute it into ``path``; after waiting for another
    process, what that process wrote. Only a stage not yet computed needs ``folder`` writable."""
    kept = read_cached(path, load)
    if kept is not None:
        yield kept
        return
    with stage_lock(folder) as waited:
        yield read_cached(path, load) if waited else None


def check_not_input(out: str | Path, *inputs: str | Path | None) -> None:
    """Raise JaxselError when writing ``out`` (a file, or a folder it replaces) would overwrite one of
    ``inputs`` (a command's data file, a selection's own files); None and non-files are skipped."""
    out = Path(out).resolve()
    for inp in inputs:
        if inp is None or not Path(inp).is_file():
            continue
        inp = Path(inp).resolve()
        if inp == out or out in inp.parents:
            raise JaxselError(f"refusing to write {out}: it would overwrite {inp}, an input (the data or selection "
                              f"it reads); choose another output path")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "", *, folder: bool = False,
                replaces: Callable[[Path], bool] | None = None):
    """Yield a temporary path beside ``path`` (an empty folder with ``folder``); on success rename it
    onto ``path``, else delete it (a folder replacing one renames the old one aside first, so a kill
    leaves ``path`` missing only between two renames, not for the old one's deletion; a failure of the
    second puts it back). An existing ``path`` is replaced only when it is a regular file
    (``folder=False``) or a folder that is empty or that ``replaces(path)`` accepts as an earlier
    output of the same kind; anything else (a folder where a file goes, a device such as /dev/null, a
    symbolic link, a folder of other files, the current folder) raises :class:`OutputError`, as does a place that
    cannot be written. In a multi-process run only process 0 writes: the others get a scratch path
    that is discarded."""
    path = Path(os.path.abspath(path))  # "." and "a/.." name the folder they are
    if not writes_files():
        with tempfile.TemporaryDirectory(prefix="jaxsel-discard-") as scratch:
            tmp = Path(scratch) / path.name
            if folder:
                tmp.mkdir()
            yield tmp
        return
    check_target(path, folder, replaces)
    ensure_folder(path.parent, path)
    try:
        prefix = f".{short_name(path.name, 200)}."  # the random part and suffix fit in the 255 bytes a name may hold
        _remove_stale(path.parent, prefix, "" if folder else suffix or path.suffix)
        if folder:
            tmp = tempfile.mkdtemp(dir=path.parent, prefix=prefix)
        else:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix or path.suffix)
            os.close(fd)
    except OSError as e:  # name the file asked for, not the temporary one
        raise OutputError(path, e.strerror, e.errno) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o755 if folder else 0o644)  # mkstemp/mkdtemp make them private; the result is ordinary
        if folder and path.is_dir():  # renamed aside, then away: missing only between two renames
            aside = tempfile.mkdtemp(dir=path.parent, prefix=prefix)  # a temporary's name: _remove_stale's
            os.rmdir(aside)
            os.replace(path, aside)
            try:
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):  # the first error is the one to tell
                    os.replace(aside, path)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:  # a full disk while writing names no file, or the temporary one: name the target
        if isinstance(e, OutputError) or e.errno is None or e.filename not in (None, tmp, str(tmp)):
            raise
        raise OutputError(path, e.strerror, e.errno) from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def _remove_stale(folder: Path, prefix: str, suffix: str, min_age: float = 600.0) -> None:
    """Delete the temporaries of one target (``prefix`` + 8 random characters + ``suffix``) left in
    ``folder`` by a process killed while writing it at least ``min_age`` seconds ago (a writer
    touches its file all along: one that old is not being written). Every atomic write does it, so
    a killed export or embedding cache write leaves no hidden file for good."""
    pattern, now = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(suffix)), time.time()
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            old = folder / name
            if pattern.fullmatch(name) and now - old.lstat().st_mtime >= min_age:
                with contextlib.suppress(OSError):
                    shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?$")  # mkstemp's names in atomic_path


def remove_stale_temporaries(folder: Path, min_age: float = 0.0) -> list[Path]:
    """Delete the temporary files and folders :func:`atomic_path` left in ``folder`` and its
    subfolders (not below a ``checkpoints`` folder: :class:`jaxsel.checkpoint.Checkpoints` removes
    an unfinished step there when it resumes) when a process was killed before renaming them into
    place, those last modified ``min_age`` seconds ago or more; returns them. Where another
    process may be writing, give a ``min_age`` longer than any write. A run killed while drawing
    its plots left ``.wallclock.png.<random>.png`` for good."""
    gone, now = [], time.time()
    if writes_files():  # multi-process: process 0 alone writes, so it alone tidies
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if d != "checkpoints"]
            for name in [*files, *dirs]:
                m = _TEMPORARY.match(name)
                path = Path(root) / name
                if m and (m["suffix"] or "") in ("", Path(m["name"]).suffix) and now - path.lstat().st_mtime >= min_age:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
                    gone.append(path)
            dirs[:] = [d for d in dirs if (Path(root) / d).exists()]
    return gone


def ensure_folder(folder: Path, target: Path) -> None:
    """Create ``folder`` (and its parents) for writing ``target``; raise :class:`OutputError` naming
    ``target`` and why (a file where a folder goes, a read-only place) when it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((a for a in (folder, *folder.parents) if a.exists() and not a.is_dir()), None)
        raise OutputError(target, e.strerror if blocker is None else f"{blocker} is a file, not a folder",
                          e.errno) from None
    if not os.access(folder, os.W_OK):
        raise OutputError(target, f"{folder} is not writable")


def short_name(text: str, limit: int = 64) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (a whole character at the end): a data
    file's name inside a default folder's, which a hash beside it keeps unique, so a long but valid
    file name never makes a folder name past the file system's 255 bytes."""
    return text.encode()[:limit].decode(errors="ignore")


def options_tag(options: dict) -> str:
    """"-" and 6 hex digits of a hash of ``options`` (a dict of settings given away from their
    defaults), "" for none: what default output folders' names carry, so output of other settings
    never lands in the same folder."""
    return "-" + hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:6] if options else ""


def check_target(path: Path, folder: bool, replaces: Callable[[Path], bool] | None = None) -> None:
    """Raise :class:`OutputError` unless writing ``path`` (a file, or a folder with ``folder``) is
    safe: nothing there, a regular file for a file, an empty folder or one ``replaces`` accepts for
    a folder; never a symbolic link (the rename replaced the link, not its target: ``--out
    /dev/stdout`` as root turned /dev/stdout into a regular file)."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink():
        raise OutputError(path, f"it is a symbolic link (to {os.readlink(path)}); name the file itself")
    if path.is_dir():
        if not folder:
            raise OutputError(path, "it is a folder; name a file inside it")
        if any(path.iterdir()) and not (replaces is not None and replaces(path)):
            raise OutputError(path, "it is a folder holding other files; name a new or empty folder")
    elif folder:
        raise OutputError(path, "a file is there, not a folder")
    elif not path.is_file():
        raise OutputError(path, "it is not a regular file (a device, a pipe or a socket)")


def folder_digest(folder: str | Path, patterns: tuple[str, ...]) -> str:
    """12 hex digits of SHA-256 over the names and bytes of ``folder``'s files matching one of
    ``patterns`` (``fnmatch``; not its subfolders): a local model's identity in cache keys, so two
    folders named alike (``a/model``, ``b/model``), or one whose weights changed, never share cached
    embeddings or stages. Read once per process for each state of the files (their sizes and
    modification times)."""
    import fnmatch
    folder = Path(folder).absolute()
    files = sorted(f for f in folder.iterdir() if f.is_file() and any(fnmatch.fnmatchcase(f.name, p) for p in patterns))
    return _folder_digest(folder, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=16)
def _folder_digest(folder: Path, state: tuple) -> str:
    import hashlib
    h = hashlib.sha256()
    for name, _, _ in state:
        h.update(name.encode() + b"\0")
        with open(folder / name, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:12]


def jsonable(obj):
    """``obj`` with numpy scalars and arrays as Python numbers and lists, tuples as lists, and
    NaN and infinities as None (null: bare ``NaN`` is not JSON)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def json_text(obj, what: str = "a value") -> str:
    """``obj`` (through :func:`jsonable`) as indented JSON text with sorted keys; raises
    JaxselError naming ``what`` for a value JSON cannot hold, before anything is written."""
    try:
        return json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise JaxselError(f"cannot write {what} as JSON: {e}") from None


def loaded(path: Path, what: str, load: Callable[[Path], T]) -> T:
    """``load(path)``, its failure on a truncated or foreign file (each library raises its own
    types: safetensors, tokenizers, json) a JaxselError naming ``path`` and ``what`` it should be."""
    try:
        return load(path)
    except (JaxselError, MemoryError):  # out of memory is not a damaged file
        raise
    except Exception as e:
        raise JaxselError(f"{path}: not a readable {what} ({type(e).__name__}: {str(e)[:120]})") from None


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as JSON (:func:`json_text`) to ``path``, atomically."""
    write_utf8(path, json_text(obj, str(path)))


def write_utf8(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | Path):
    """The JSON document in ``path`` (UTF-8)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_npz(path: str | Path, **arrays) -> None:
    """Write ``arrays`` to one ``.npz`` file, atomically, each with its sha256 beside it
    (``NAME.sha256``), which :func:`read_npz` checks: a cache file edited by hand is computed
    again, not used."""
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays, **{f"{name}{_SHA}": np.array(_digest(a)) for name, a in arrays.items()})


def read_npz(path: str | Path, names: list[str] | tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Arrays ``names`` (default: every one) of a :func:`write_npz` file. Raises ValueError for an
    array whose sha256 differs from the one written beside it (files written before 2026-12-05
    have none), KeyError for a missing name, and numpy's errors for an unreadable file."""
    with np.load(path) as z:
        names = [n for n in z.files if not n.endswith(_SHA)] if names is None else list(names)
        out = {name: z[name] for name in names}
        for name, a in out.items():
            if name + _SHA in z.files and str(z[name + _SHA]) != _digest(a):
                raise ValueError(f"{name} changed since it was written")
    return out


_SHA = ".sha256"


def _digest(a: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    import hashlib
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, JaxselError)  # JSON and pickle errors are ValueErrors


def read_cached(path: str | Path, load: Callable[[Path], T]) -> T | None:
    """``load(path)`` of a cache or stage file, or None when there is none or it cannot be read (cut
    short by a full disk, damaged by hand, an older format): the caller computes it again and its
    atomic write replaces the file; a warning names the file. Errors of ``load`` outside
    :data:`UNREADABLE` propagate."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load(path)
    except UNREADABLE as e:
        from jaxsel.errors import warn
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
        warn(f"ignoring the unreadable cache file {path} ({why}); computing it again")
        return None
