"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""


class JaxselError(ValueError):
    """Bad input or environment, explained in one line (missing column, wrong checksum, ...)."""


class OutputError(JaxselError, OSError):
    """A file or folder the user named cannot be written (a folder where a file goes, a device, a
    read-only place). Also an OSError, so code that only skips a cache on a failed write still does."""

    def __init__(self, path, reason: str, errno: int | None = None):
        OSError.__init__(self, errno, reason, str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def check_at_least(owner: str, obj, low: int, *names: str) -> None:
    """Raise JaxselError unless each field ``names`` of ``obj`` is at least ``low`` (a config's
    ``__post_init__``: a zero count would otherwise surface as a division by zero or an empty scan)."""
    for name in names:
        value = getattr(obj, name)
        if value < low:
            raise JaxselError(f"{owner} {name} must be at least {low}, got {value}")
