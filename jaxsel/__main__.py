"""The ``jaxsel`` command (also ``python -m jaxsel``): the finetuning commands' malloc setting, then
:func:`jaxsel.cli.entry`.

The setting (:mod:`jaxsel.allocator`) has to come before numpy, pyarrow and XLA start their threads,
so this module imports nothing else until it is made; importing :mod:`jaxsel.cli` or calling
``jaxsel.cli.main`` from Python leaves malloc alone.
"""

import sys

from jaxsel import allocator
from jaxsel.errors import JaxselError

FINETUNING = ("run", "finetune")  # the commands that keep freed memory for XLA


def configure(argv: list[str]) -> None:
    """Keep freed memory (:func:`jaxsel.allocator.keep_freed_memory`) when ``argv`` (the arguments
    after the program name) starts with one of :data:`FINETUNING`. An unknown ``JAXSEL_MALLOC``
    value ends the program with one line and exit status 2."""
    if argv[:1] and argv[0] in FINETUNING:
        try:
            allocator.keep_freed_memory()
        except JaxselError as e:
            print(f"jaxsel: error: {e}", file=sys.stderr)
            sys.exit(2)


def entry() -> None:
    """The ``jaxsel`` command: :func:`configure`, then :func:`jaxsel.cli.entry`."""
    configure(sys.argv[1:])
    from jaxsel import cli
    cli.entry()


if __name__ == "__main__":
    entry()
