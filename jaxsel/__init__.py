"""jaxsel: RL-guided data selection for language model finetuning, in JAX.

Data flow, one subpackage or module per stage: ``data.load`` -> ``embed.embed_dataset`` ->
``cluster.kmeans`` -> ``proxy.make`` (the reward) -> ``agents.select`` (ppo, dqn, greedy, climb,
random-search; baselines random, stratified, typical, cleanlab; full) -> ``Selection`` ->
``finetune.finetune``; ``experiment.run(config)`` does all of it and ``experiment.report``
summarises. ``models`` holds the networks (BERT, Llama, classifiers, tokenization). Modules are
imported lazily so ``import jaxsel`` is cheap; the names modules had before the subpackages
(``jaxsel.ppo``, ``jaxsel.bert``, ...) still resolve.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["agents", "allocator", "assets", "baselines", "checkpoint", "cli", "cluster", "config", "data", "distributed",
           "embed", "errors", "experiment", "finetune", "io", "label_issues", "metrics", "models", "progress", "proxy",
           "selection"]  # every module: `import jaxsel; jaxsel.allocator.keep_freed_memory()` as the README says
MOVED = {**{m: "models" for m in ("bert", "llama", "classifier", "tokens")},
         **{m: "agents" for m in ("ppo", "dqn", "env", "episodes", "networks", "search", "reward_model")},
         "noise": "data", "report": "experiment", "stages": "experiment"}


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"jaxsel.{name}")
    if name in MOVED:
        return importlib.import_module(f"jaxsel.{MOVED[name]}.{name}")
    raise AttributeError(f"module 'jaxsel' has no attribute {name!r}")
