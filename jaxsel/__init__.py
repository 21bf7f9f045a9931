"""jaxsel: RL-guided data selection for language model finetuning, in JAX.

Data flow: ``data.load`` -> ``embed.embed_dataset`` -> ``cluster.kmeans`` -> ``proxy.make`` (reward)
-> ``agents.select`` (ppo, dqn, greedy, climb, random-search; baselines random, stratified, typical,
cleanlab; full) -> ``Selection`` -> ``finetune.finetune``;
``experiment.run(config)`` does all of it and ``report`` summarises. Modules are imported lazily so
``import jaxsel`` is cheap.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["agents", "assets", "baselines", "bert", "classifier", "cluster", "data", "dqn", "embed", "env", "episodes",
           "errors", "experiment", "finetune", "io", "label_issues", "llama", "networks", "noise", "ppo", "proxy", "report",
           "reward_model", "search", "selection"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"jaxsel.{name}")
    raise AttributeError(f"module 'jaxsel' has no attribute {name!r}")
