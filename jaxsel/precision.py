"""jaxsel computes in 32 bits whatever ``jax_enable_x64`` says.

With ``jax_enable_x64`` on (``JAX_ENABLE_X64=1``, a common notebook setting) jax makes the scalars it
derives from Python numbers float64, e.g. optax's Adam bias correction and learning-rate schedules:
the updates then round otherwise than in float32, and PPO drifted to another subset within 15
updates, a finetune to other losses (round 35). The entry points of selection and finetuning run
under :func:`in_32_bits`, so the same seed gives the same selection and finetune either way:
``agents.select`` (so ``select_among``, the CLI and ``jaxsel run``), ``finetune.finetune``, the
proxies' ``score_rows`` and a run's search-space map. Pieces traced inside the caller's own jit
(``ppo.make_train``, ``dqn.make_train``, ``reward_model.fit``, the searches in ``agents.search``)
follow the caller's mode: call them under ``with jax.enable_x64(False):`` for the same numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import jax

P = ParamSpec("P")
R = TypeVar("R")


def in_32_bits(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` run with ``jax_enable_x64`` off (``jax.enable_x64(False)``: this thread only, restored
    on return). Arrays the caller made in 64 bits enter jitted code as 32-bit ones, as they would
    have been made with the flag off; keep pinned 32-bit dtypes on what crosses in (jax warns
    "Explicitly requested dtype ... truncated" where one is 64-bit)."""
    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with jax.enable_x64(False):
            return fn(*args, **kwargs)
    return wrapped
