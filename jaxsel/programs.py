"""What a long process keeps of JAX's compiled programs.

JAX keeps every program it compiles, for every shape it met, until the process ends. On Linux each
XLA:CPU program holds several memory maps of its machine code, and the kernel allows a process
``vm.max_map_count`` maps (65,530 by default): a notebook or script that selects, clusters or
finetunes many problems of different shapes in one process (~1,400 maps for a k-means, a proxy,
greedy and PPO at a new K and N, measured 2026-12-07) reaches it after some dozens and dies in LLVM
("Cannot allocate memory", then a segmentation fault), with no Python error. jaxsel's entry points
(:func:`jaxsel.agents.select`, :func:`jaxsel.proxy.make`, :func:`jaxsel.cluster.kmeans`,
:func:`jaxsel.finetune.train_and_evaluate`, :func:`jaxsel.embed.encode`,
:func:`jaxsel.label_issues.find`) call :func:`make_room` first, which clears JAX's in-memory caches
(``jax.clear_caches``) when the process holds most of its allowance: later calls compile again, or
load from the persistent compilation cache.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

log = logging.getLogger(__name__)
MAPS, MAP_LIMIT = Path("/proc/self/maps"), Path("/proc/sys/vm/max_map_count")
SHARE = 0.75  # of the allowance: room left for a call's own programs (a whole selection needs ~2%)
REGROWTH = 0.05  # of the allowance: new maps since the last clearing that make another worth it
# The fewest maps make_room saw since it last cleared (None before): maps that are not programs
# (memory-mapped Arrow files, libraries) stay after a clearing; a count below it (files closed) lowers it.
_floor: int | None = None


def map_count(maps: Path | None = None, limit: Path | None = None) -> tuple[int, int] | None:
    """(memory maps this process holds, the kernel's ``vm.max_map_count``), read from ``maps`` and
    ``limit`` (default ``MAPS``, ``MAP_LIMIT``), or None where the system does not say (not Linux)."""
    try:
        with open(maps or MAPS, "rb") as f:
            used = sum(1 for _ in f)
        return used, int((limit or MAP_LIMIT).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None


def make_room(maps: Path | None = None, limit: Path | None = None, share: float = SHARE) -> bool:
    """Clear JAX's in-memory caches of compiled programs (``jax.clear_caches``) when this process
    holds more than ``share`` of the memory maps the kernel allows it, and ``REGROWTH`` of it more
    than the fewest it saw since the last clearing (maps that are not programs, such as
    memory-mapped Arrow files, are not cleared again and again), with a note; whether it did. Only
    between calls, never inside a trace: the entry points call it before they compile."""
    global _floor
    counted = map_count(maps, limit)
    if counted is None:
        return False
    if _floor is not None:
        _floor = min(_floor, counted[0])
    if counted[0] < share * counted[1] or (_floor is not None and counted[0] < _floor + REGROWTH * counted[1]):
        return False
    import jax
    jax.clear_caches()
    gc.collect()
    _floor = (map_count(maps, limit) or counted)[0]
    log.info(f"this process held {counted[0]:,} of the {counted[1]:,} memory maps the kernel allows it "
             f"(vm.max_map_count), most of them compiled programs of earlier shapes: JAX's in-memory caches of "
             f"compiled programs were cleared (later calls compile again), not run out of")
    return True
