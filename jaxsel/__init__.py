"""jaxsel: RL-guided data selection for language model finetuning, in JAX.

Data flow: ``data.load`` -> ``embed.embed_dataset`` -> ``cluster.kmeans`` -> ``proxy`` (reward)
-> selection agents -> finetuning. Modules are imported lazily so ``import jaxsel`` is cheap.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["assets", "bert", "cluster", "data", "embed", "errors", "io", "proxy"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"jaxsel.{name}")
    raise AttributeError(f"module 'jaxsel' has no attribute {name!r}")
