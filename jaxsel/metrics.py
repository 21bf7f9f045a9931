"""Step metrics a person or a dashboard can read: ``--log-dir DIR``.

Inside :func:`logging_to` (what ``--log-dir`` opens), :func:`log` appends one JSON object per line
to ``DIR/metrics.jsonl``::

    {"time": 1764500000.1, "stage": "clean/ppo/5pct/s0/ppo", "step": 40, "best_score": 0.71, ...}

and, when the ``tensorboardX`` package is installed (``pip install jaxsel[tensorboard]``), the same
scalars as TensorBoard event files in ``DIR`` (``tensorboard --logdir DIR``). What is logged:

- PPO / DQN, after every checkpoint chunk (``step`` = updates): ``best_score`` (the best finished
  episode's proxy objective so far), ``mean_episode_score`` (the latest mean over the episodes
  finished in an update), ``env_steps``;
- CLIMB-Disc and the reward-model rounds (``step`` = round): ``best_score``, ``evaluations``;
- finetuning, after every epoch (``step`` = optimizer steps): ``loss`` (mean training loss of the
  epoch), ``validation_accuracy``, ``tokens_per_s``, ``learning_rate`` (at the epoch's last step).

``stage`` is the nesting of :func:`scope` names (``jaxsel run`` scopes each cell as
``variant/method/budget/seed``). Outside :func:`logging_to`, :func:`log` does nothing. Lines are
flushed as written, so a crashed run keeps what it logged.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from jaxsel.errors import JaxselError

_sink: "Sink | None" = None
_scope: list[str] = []


class Sink:
    """``metrics.jsonl`` (appended) plus a TensorBoard writer when tensorboardX imports."""

    def __init__(self, folder: str | Path):
        from jaxsel.io import ensure_folder
        self.folder = Path(folder)
        ensure_folder(self.folder, self.folder / "metrics.jsonl")  # OutputError (a JaxselError) for a file there
        self.file = open(self.folder / "metrics.jsonl", "a", encoding="utf-8")
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(self.folder))
        except ImportError:
            self.tb = None

    def write(self, stage: str, step: int, values: dict[str, float]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
        self.file.write(json.dumps({"time": time.time(), "stage": stage, "step": step, **clean}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in clean.items():
                if v is not None:
                    self.tb.add_scalar(f"{stage}/{k}", v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


@contextmanager
def logging_to(folder: str | Path | None):
    """Send :func:`log` calls to ``folder`` (created if needed) inside the block; None: log nothing."""
    global _sink
    from jaxsel.io import writes_files
    if folder is None or not writes_files():  # a multi-process run: process 0 logs
        yield None
        return
    previous, _sink = _sink, Sink(folder)
    try:
        yield _sink
    finally:
        _sink.close()
        _sink = previous


@contextmanager
def scope(name: str):
    """Prefix the stage of the :func:`log` calls inside the block with ``name``."""
    _scope.append(name)
    try:
        yield
    finally:
        _scope.pop()


def log(stage: str, step: int, **values: float) -> None:
    """Record ``values`` (numbers: Python, numpy or one-element arrays) of ``stage`` at ``step``
    (an integer); nothing outside :func:`logging_to`. Raises JaxselError for another value."""
    if _sink is None:
        return
    if np.ndim(step) or np.asarray(step).dtype.kind not in "iu":
        raise JaxselError(f"metrics step must be an integer, got {step!r}")  # 3.7 was logged as 3
    numbers = {}
    for k, v in values.items():
        try:
            numbers[k] = float(np.asarray(v).reshape(()))
        except (TypeError, ValueError):
            raise JaxselError(f"metric {k!r} must be a number, got {type(v).__name__} {str(v)[:40]!r}") from None
    _sink.write("/".join([*_scope, stage]), int(step), numbers)
