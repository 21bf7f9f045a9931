"""The ``jaxsel`` command (also ``python -m jaxsel``): the finetuning commands' malloc setting, then
:func:`jaxsel.cli.entry`.

The setting (:mod:`jaxsel.allocator`) has to come before numpy, pyarrow and XLA start their threads,
so this module imports nothing else until it is made; importing :mod:`jaxsel.cli` or calling
``jaxsel.cli.main`` from Python leaves malloc alone.
"""

import os
import sys

from jaxsel import allocator
from jaxsel.errors import JaxselError, say

FINETUNING = ("run", "finetune")  # the commands that keep freed memory for XLA


def configure(argv: list[str]) -> None:
    """Check ``JAXSEL_MALLOC`` (every command) and keep freed memory
    (:func:`jaxsel.allocator.keep_freed_memory`) when ``argv`` (the arguments after the program
    name) starts with one of :data:`FINETUNING`. An unknown ``JAXSEL_MALLOC`` value ends the
    program with one line and exit status 2."""
    try:
        allocator.choice()
    except JaxselError as e:
        say(f"jaxsel: error: {e}")
        sys.exit(2)
    if argv[:1] and argv[0] in FINETUNING:
        allocator.keep_freed_memory()


def hold_standard_error() -> None:
    """Where the process started with standard error closed (``2>&-``; ``sys.stderr`` is None), give
    descriptor 2 to the null device: else the first file opened takes it, and what XLA and absl write
    to standard error lands in that file (a results or checkpoint file being written)."""
    if sys.stderr is None:
        fd = os.open(os.devnull, os.O_WRONLY)
        if fd != 2:  # 2 is taken after all: leave it
            os.close(fd)


def entry() -> None:
    """The ``jaxsel`` command: :func:`hold_standard_error`, :func:`configure`, then
    :func:`jaxsel.cli.entry`. A Ctrl-C while jaxsel.cli imports (numpy, datasets: the first ~0.2 s)
    ends with the same one line as later."""
    hold_standard_error()
    configure(sys.argv[1:])
    try:
        from jaxsel import cli
    except KeyboardInterrupt:
        say("jaxsel: interrupted")
        sys.exit(130)
    cli.entry()


if __name__ == "__main__":
    entry()
