"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""


class JaxselError(ValueError):
    """Bad input or environment, explained in one line (missing column, wrong checksum, ...)."""


def check_at_least(owner: str, obj, low: int, *names: str) -> None:
    """Raise JaxselError unless each field ``names`` of ``obj`` is at least ``low`` (a config's
    ``__post_init__``: a zero count would otherwise surface as a division by zero or an empty scan)."""
    for name in names:
        value = getattr(obj, name)
        if value < low:
            raise JaxselError(f"{owner} {name} must be at least {low}, got {value}")
