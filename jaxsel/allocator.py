"""glibc malloc settings that keep XLA:CPU's freed buffers for its next call.

XLA:CPU takes each call's outputs and temporaries from malloc. Under glibc's defaults its worker
threads get arenas of their own, whose heaps (64 MiB each at most) are mapped and unmapped as they
fill and empty, and chunks above the mmap threshold are unmapped when freed, so the next call
faults every page in again: a MiniLM finetune step (batch 32 x 64 tokens, 2 CPU cores) faulted in
~165,000 pages (~650 MB) each time and spent a quarter of its CPU time in the kernel. One arena
that serves everything from its heap and hands memory back only above 2 GiB free grows once and
then faults nothing: that step ran 1.3-1.6x faster (``bench/README.md``, "Page faults"). It is no
free lunch: PPO and DQN, whose programs allocate many small buffers, lose 15-40% of their env
steps/s, mostly to glibc searching the one arena's long free lists (``_int_malloc`` took 9% of a PPO
run's cycles instead of 1%).

The ``jaxsel run`` and ``jaxsel finetune`` commands, where finetuning dominates, apply it as they
start, before any thread (``jaxsel.__main__``); their own PPO selection pays that cost.
``jaxsel select`` and the other commands, ``import jaxsel`` and ``jaxsel.cli.main`` keep glibc's
defaults. In your own finetuning script call :func:`keep_freed_memory` first, before importing
numpy or jax; in a notebook, whose kernel already runs threads, set the same through the
environment before it starts::

    MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 jupyter lab

``JAXSEL_MALLOC=system`` (any case) keeps glibc's defaults; so does any malloc variable of your own
(``MALLOC_*``, or ``GLIBC_TUNABLES`` with a ``glibc.malloc.`` tunable), which then rules. Memory
freed stays in the process: its resident size does not shrink until exit.
"""

from __future__ import annotations

import ctypes
import os
import sys

from jaxsel.errors import JaxselError

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
OPT_OUT = "JAXSEL_MALLOC"  # "keep" (the default) or "system": leave glibc's defaults
CHOICES = ("keep", "system")
applied = False  # set by keep_freed_memory in this process


def mallopt():
    """glibc's ``mallopt`` through ctypes, or None off glibc (macOS; musl, whose mallopt does nothing)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only
        return libc.mallopt
    except (OSError, AttributeError):
        return None


def choice() -> str:
    """``JAXSEL_MALLOC`` lower-cased, "keep" when unset or empty.

    Raises:
        JaxselError: for a value other than "keep" or "system"."""
    value = os.environ.get(OPT_OUT, "").strip().lower() or "keep"
    if value not in CHOICES:
        raise JaxselError(f"{OPT_OUT}={os.environ[OPT_OUT]!r}: choose {' or '.join(CHOICES)}")
    return value


def is_malloc_variable(name: str, value: str) -> bool:
    """Whether an environment variable sets glibc's malloc: any non-empty ``MALLOC_*``, or a
    ``GLIBC_TUNABLES`` naming a ``glibc.malloc.`` tunable."""
    return bool(value) and (name.startswith("MALLOC_") or name == "GLIBC_TUNABLES" and "glibc.malloc." in value)


def user_settings() -> str:
    """The malloc variables (:func:`is_malloc_variable`) this process started with, "" when none."""
    return " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if is_malloc_variable(k, v))


def keep_freed_memory() -> bool:
    """Set :data:`SETTINGS` with glibc's ``mallopt``, each of them; True when all took. A no-op
    (False) off glibc, with ``JAXSEL_MALLOC=system`` or when the user set malloc through the
    environment (:func:`user_settings`). Call it before any other thread has called malloc: a
    thread that already has an arena keeps it.

    Raises:
        JaxselError: for an unknown ``JAXSEL_MALLOC`` value (:func:`choice`)."""
    set_option = mallopt()
    if choice() == "system" or user_settings() or set_option is None:
        return False
    global applied
    applied = all([set_option(param, value) == 1 for param, value in SETTINGS])  # a list: every one is tried
    return applied


def describe() -> str:
    """How this process's malloc was set, for benchmark records: "kept (mallopt)" after
    :func:`keep_freed_memory`, the user's variables (:func:`user_settings`), or "defaults"."""
    return "kept (mallopt)" if applied else user_settings() or "defaults"
