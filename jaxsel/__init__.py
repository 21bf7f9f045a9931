"""jaxsel: RL-guided data selection for language model finetuning, in JAX.

Data flow, one subpackage or module per stage: ``data.load`` -> ``embed.embed_dataset`` ->
``cluster.kmeans`` -> ``proxy.make`` (the reward) -> ``agents.select`` (ppo, dqn, greedy, climb,
random-search; baselines random, stratified, typical, cleanlab; full) -> ``Selection`` ->
``finetune.finetune``; ``experiment.run(config)`` does all of it and ``experiment.report``
summarises. ``models`` holds the networks (BERT, Llama, classifiers, tokenization). Modules are
imported lazily so ``import jaxsel`` is cheap; ``jaxsel.JaxselError`` is every user mistake and
``jaxsel.JaxselWarning`` every warning (Python's ``warnings``: filterable); notes (what jaxsel did
for you: a class dropped, a config file found, another process waited for) go to the ``jaxsel``
logger (Python's ``logging``), shown as "note: ..." lines until ``logging.getLogger("jaxsel")
.setLevel(logging.WARNING)``; the names modules had before the subpackages (``jaxsel.ppo``,
``jaxsel.bert``, ...) still resolve.
"""

import functools
import importlib
import logging
import subprocess
from pathlib import Path

from jaxsel import errors

__version__ = "0.1.0"
__all__ = ["agents", "allocator", "assets", "baselines", "checkpoint", "cli", "cluster", "config", "data", "distributed",
           "embed", "errors", "experiment", "finetune", "io", "label_issues", "metrics", "models", "precision", "programs",
           "progress", "proxy", "selection"]  # every module: `import jaxsel; jaxsel.allocator.keep_freed_memory()` as the README says
MOVED = {**{m: "models" for m in ("bert", "llama", "classifier", "tokens")},
         **{m: "agents" for m in ("ppo", "dqn", "env", "episodes", "networks", "search", "reward_model")},
         "noise": "data", "report": "experiment", "stages": "experiment"}
CLASSES = {"JaxselError": "errors", "JaxselWarning": "errors"}  # `except jaxsel.JaxselError`, warning filters
errors.show_notes(logging.getLogger(__name__))


@functools.cache
def code_version() -> str:
    """``__version__`` with the git commit of the source when jaxsel runs from a git checkout of
    itself (an editable install): "0.1.0+gf3c60a4", "0.1.0+gf3c60a4.dirty" when its package folder
    has uncommitted changes; else ``__version__``. What runs and selections record: the version
    number alone stays the same across hundreds of commits that change results."""
    root = Path(__file__).resolve().parent.parent
    if not ((root / ".git").exists() and (root / "pyproject.toml").exists()):
        return __version__  # an installed wheel: a git folder around it is not its source
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        commit, changed = git("rev-parse", "--short=7", "HEAD"), git("status", "--porcelain", "--", "jaxsel")
    except (OSError, subprocess.SubprocessError):  # no git, or not a repository after all
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if changed else ''}"


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"jaxsel.{name}")
    if name in CLASSES:
        return getattr(importlib.import_module(f"jaxsel.{CLASSES[name]}"), name)
    if name in MOVED:
        return importlib.import_module(f"jaxsel.{MOVED[name]}.{name}")
    raise AttributeError(f"module 'jaxsel' has no attribute {name!r}")
