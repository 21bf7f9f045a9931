"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""


class JaxselError(ValueError):
    """Bad input or environment, explained in one line (missing column, wrong checksum, ...)."""
