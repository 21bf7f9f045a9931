"""The one exception type for user mistakes (the CLI prints it as one line and exits 2), the one
warning type for what does not stop the work, the notes' display (Python's ``logging``), and the
checks configs run on their fields."""

import contextlib
import dataclasses
import functools
import logging
import numbers
import os
import sys
import types
import typing
import warnings


class JaxselError(ValueError):
    """Bad input or environment, explained in one line (missing column, wrong checksum, ...)."""


class JaxselWarning(UserWarning):
    """Something the user should know that does not stop the work (a class missing from a subset,
    too few optimizer steps, a duplicated text, ...). A Python warning: ``warnings.filterwarnings(
    "ignore", category=jaxsel.JaxselWarning)`` silences them, ``warnings.catch_warnings(record=True)``
    collects them; the ``jaxsel`` command prints each as one line, "warning: " + the message."""


_warned: set[str] = set()  # the messages warn(..., once=True) showed or recorded in this process


def warn(message: str, once: bool = False) -> None:
    """Issue ``message`` as a :class:`JaxselWarning` (Python's ``warnings``: shown on stderr unless
    filtered, raised where the filters say "error"; the CLI prints it as "warning: " + ``message``),
    attributed to the first frame outside jaxsel and jax. With ``once``, not again when this process
    showed or recorded the same message (a property of the data that every seed's and method's pass
    would repeat), unless the caller's filters say "always" or "error" (``catch_warnings(record=True)``
    with ``simplefilter("always")``, ``-W error``); one the filters ignored or raised is issued again
    next time."""
    frame, level = _caller()
    where = (_module(frame), frame.f_lineno)
    asked = filter_action(message, JaxselWarning, *where, own=False) if once and message in _warned else "always"
    if asked not in ("always", "error"):
        return  # shown already, and no filter of the caller's asks for every occurrence
    warnings.warn(message, JaxselWarning, stacklevel=level)
    if once and filter_action(message, JaxselWarning, *where) != "ignore":
        _warned.add(message)


_INSIDE = ("jaxsel", "jax", "jaxlib", "warnings", "_py_warnings")  # modules a warning is not shown in


def _module(frame) -> str:
    """The module name Python's warnings give a frame ("<string>" without one)."""
    return str(frame.f_globals.get("__name__") or "<string>")


def _caller() -> tuple:
    """(frame, ``stacklevel``) of the first frame from :func:`warn`'s caller up that is outside
    jaxsel, jax and the warnings module: a warning is shown at the user's line that led to it (a
    notebook cell's), as Python 3.12's ``skip_file_prefixes`` would, and filtered by that module."""
    frame, level = sys._getframe(2), 2  # warn's caller, in jaxsel
    while frame is not None and _module(frame).partition(".")[0] in _INSIDE:
        frame, level = frame.f_back, level + 1
    return (frame, level) if frame is not None else (sys._getframe(2), 2)


def filter_action(message: str, category: type, module: str, lineno: int = 0, *, own: bool = True) -> str:
    """The action the warning filters in force (first match wins; a ``catch_warnings`` block's own
    on Python 3.14's context-aware warnings) take on ``message`` of ``category`` issued in
    ``module`` at ``lineno``: "ignore", "error", "always", "default", ...; without ``own``, as if
    :func:`warnings_as_lines` had not added its "always" (the user's filters only)."""
    filters = warnings._get_filters() if hasattr(warnings, "_get_filters") else warnings.filters
    for action, text, cat, mod, line in filters:
        if not own and (action, text, cat, mod, line) == _LINES_FILTER:
            continue
        if ((text is None or text.match(message)) and issubclass(category, cat)
                and (mod is None or mod.match(module)) and line in (0, lineno)):
            return action
    return warnings.defaultaction


_LINES_FILTER = ("always", None, JaxselWarning, None, 0)  # the entry warnings_as_lines appends to the filters


@contextlib.contextmanager
def warnings_as_lines():
    """Within this block every :class:`JaxselWarning` is printed to stderr as one line, "warning: " +
    its message, each time it is issued (the ``jaxsel`` command's form) unless the warning filters
    set before say otherwise (``-W``, ``PYTHONWARNINGS``, a notebook's ``filterwarnings``: theirs come
    first); other warnings as Python shows them. Restores the warning filters and display on exit
    (the display by hand: Python 3.14's context-aware ``catch_warnings`` leaves it)."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, JaxselWarning):
            say(f"warning: {message}", beside_bars=True)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.filterwarnings("always", category=JaxselWarning, append=True)  # stored as _LINES_FILTER
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = shown


def say(line: str, *, beside_bars: bool = False) -> None:
    """``line`` on the standard error of the moment, flushed; nothing where there is none (a process
    started with it closed, ``2>&-``, or by pythonw): ``print`` would put it on standard output, among
    the results (``jaxsel data --json``). ``beside_bars``: through ``tqdm.write``, so a progress bar
    being drawn is not broken (notes and warnings; not an interrupt's line, said from a signal
    handler or a timer thread, where tqdm's lock may be held)."""
    if sys.stderr is None:
        return
    if beside_bars:
        from tqdm import tqdm
        tqdm.write(line, file=sys.stderr)
        sys.stderr.flush()
    else:
        print(line, file=sys.stderr, flush=True)


class NoteLines(logging.Handler):
    """The ``jaxsel`` logger's display: each record one line on the standard error of the moment (a
    notebook's, pytest's capture; none where there is none: :func:`say`), "note: " + the formatted
    message for INFO ("warning: ", "error: " above; the handler's formatter, ``%(message)s`` unless
    set), beside any progress bar being drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kind = "note" if record.levelno < logging.WARNING else record.levelname.lower()
            say(f"{kind}: {self.format(record)}", beside_bars=True)
        except Exception:  # logging's contract: a failing display reports itself, never stops the work
            self.handleError(record)


def show_notes(logger: logging.Logger) -> None:
    """Give jaxsel's logger its display, once a process (not again when ``jaxsel`` is reloaded), and
    not where the application gave it a handler before: records of INFO and above (a level set
    before ``import jaxsel`` is kept) printed by :class:`NoteLines` and not passed on to the root
    logger (whose handlers, e.g. ``logging.basicConfig``'s, would print each note twice).
    ``logging.getLogger("jaxsel").setLevel(logging.WARNING)`` silences the notes; ``.propagate =
    True`` (and removing the handler) sends them to the application's logging."""
    if getattr(logger, "jaxsel_display", False) or logger.handlers:
        return
    logger.jaxsel_display = True
    logger.addHandler(NoteLines())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """"1 text", "2 texts" ("2 classes" with ``plural``): a count in a message."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def is_int(value) -> bool:
    """Whether ``value`` is a whole number as Python or numpy types it (a bool is not one)."""
    import numpy as np
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class OutputError(JaxselError, OSError):
    """A file or folder the user named cannot be written (a folder where a file goes, a device, a
    read-only place). Also an OSError, so code that only skips a cache on a failed write still does."""

    def __init__(self, path, reason: str, errno: int | None = None):
        OSError.__init__(self, errno, reason, str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


MAX_INT = 2**31 - 1  # any integer setting: counts, sizes, seeds (jax's int32)
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a table"}


def _expected(hint) -> str:
    """How a type reads in an error message ("an integer", "a list (a string each)", ...)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return f"a list ({_expected(typing.get_args(hint)[0])} each)"
    hint = typing.get_origin(hint) or hint
    return _NAMES.get(hint) or f"a {getattr(hint, '__name__', hint)}"


def _coerce(value, hint):
    """``value`` as type ``hint``: whole numbers (numpy's too) become floats where a float goes, numpy
    integers, bools and strings Python ones, paths strings, lists and 1-D arrays tuples; a bool is no number; a
    nested config must be of its class. Raises TypeError if it is not one (OverflowError for an
    integer too large for a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arm)
            except TypeError:
                pass
        raise TypeError
    import numpy as np
    if origin is tuple:
        if isinstance(value, np.ndarray) and value.ndim == 1:
            value = value.tolist()  # np.arange(3) for seeds
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return tuple(_coerce(v, args[0]) for v in value)
    if hint is float and isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return float(value)  # OverflowError for an int beyond float's range
    if hint is int and is_int(value):
        if abs(value) > MAX_INT:
            raise OverflowError  # a count past int32 overflowed inside jax
        return int(value)
    if hint is bool and isinstance(value, (bool, np.bool_)):
        return bool(value)
    if hint is str and isinstance(value, (str, os.PathLike)):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)  # np.str_ -> str
    if hint is dict and isinstance(value, dict):
        return value
    if hint in (int, float, str, bool, dict):
        raise TypeError
    if dataclasses.is_dataclass(hint) and not isinstance(value, hint):
        raise TypeError  # a nested config section of another type
    return value


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def check_types(owner: str, obj) -> None:
    """Check every field of the frozen config dataclass ``obj`` against its type hint and store the
    :func:`_coerce`-d value (``lr=1`` becomes 1.0: a config and its checkpoints spell it one way).
    Raise JaxselError naming the field and the type it needs."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        try:
            object.__setattr__(obj, f.name, _coerce(value, hints[f.name]))
        except TypeError:
            raise JaxselError(f"{owner} {f.name} must be {_expected(hints[f.name])}, got {_short(value)}") from None
        except OverflowError:
            raise JaxselError(f"{owner} {f.name} {_too_large(hints[f.name], value)}") from None
        value = getattr(obj, f.name)
        if any("\0" in v for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, str)):
            raise JaxselError(f"{owner} {f.name} must not contain a NUL character")


def _too_large(hint, value) -> str:
    """The end of the message for a number :func:`_coerce` found too large for ``hint``."""
    if int in (hint, *typing.get_args(hint)):
        return f"must be an integer of at most {MAX_INT:,}, got {_short(value)}"
    return f"must be a finite number, got an integer of {len(str(value))} digits"


def _short(value) -> str:
    """``repr(value)`` on one line, cut to 60 characters (an error message stays one readable line)."""
    text = " ".join(repr(value).split())  # a 2-D array's repr spans lines
    return text if len(text) <= 60 else text[:57] + "..."


def check_choice(owner: str, obj, name: str, choices: tuple) -> None:
    """Raise JaxselError unless field ``name`` of ``obj`` is one of ``choices``."""
    value = getattr(obj, name)
    if value not in choices:
        raise JaxselError(f"unknown {owner} {name} {value!r} (choose from {', '.join(map(str, choices))})")


def check_range(owner: str, obj, low: float, high: float, *names: str, low_open: bool = False) -> None:
    """Raise JaxselError unless each field ``names`` of ``obj`` (None skipped) is a finite number in
    [low, high] ((low, high] with ``low_open``; high may be inf for no bound); NaN and inf fail."""
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if value in (float("inf"), float("-inf")):
            raise JaxselError(f"{owner} {name} must be a finite number, got {value}")
        if not (low < value <= high if low_open else low <= value <= high):
            if high == float("inf"):
                raise JaxselError(f"{owner} {name} must be a number {'>' if low_open else '>='} {low:g}, got {value}")
            raise JaxselError(f"{owner} {name} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value}")


def check_at_least(owner: str, obj, low: int, *names: str) -> None:
    """Raise JaxselError unless each field ``names`` of ``obj`` (None skipped) is at least ``low`` (a
    config's ``__post_init__``: a zero count would otherwise surface as a division by zero or an empty
    scan)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and not value >= low:  # NaN too
            raise JaxselError(f"{owner} {name} must be at least {low}, got {value}")


MAX_SEED = MAX_INT  # numpy's and jax's seeds: larger ones overflowed deep inside a run


def check_seed(owner: str, obj, *names: str) -> None:
    """Raise JaxselError unless each field ``names`` of ``obj`` is a seed, 0..:data:`MAX_SEED`."""
    for name in names:
        value = getattr(obj, name)
        if not 0 <= value <= MAX_SEED:
            raise JaxselError(f"{owner} {name} must be a seed from 0 to {MAX_SEED}, got {value}")


def check_labels(labels, name: str, rows: int | None = None, num_classes: int | None = None):
    """``labels`` as an int64 array (n,) of class ids 0..C-1 (``num_classes`` when given), checked:
    raise JaxselError for another rank, a length other than ``rows``, strings, non-integral numbers or
    negative ids (-1 as "unlabelled" used to wrap around to the last class)."""
    import numpy as np

    y = np.asarray(labels)
    if y.ndim != 1:
        raise JaxselError(f"{name} must be a 1-D array of class ids, got shape {y.shape}")
    if rows is not None and len(y) != rows:
        raise JaxselError(f"{name} has {len(y)} labels for {rows} rows")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        if not np.issubdtype(y.dtype, np.floating) or not np.isfinite(y).all() or (y != np.round(y)).any():
            raise JaxselError(f"{name} must be integer class ids 0..C-1, got {y.dtype} values such as {y[:3].tolist()} "
                              f"(map names to ids first, e.g. np.unique(labels, return_inverse=True))")
    if np.issubdtype(y.dtype, np.unsignedinteger) and len(y) and y.max() > np.iinfo(np.int64).max:
        raise JaxselError(f"{name} must be class ids 0..C-1, got {int(y.max())}")  # read as -1 after the cast
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise JaxselError(f"{name} must be class ids 0..C-1, got {int(y.min())} (drop unlabelled rows first)")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise JaxselError(f"{name} holds class {int(y.max())}, but there are {num_classes} classes "
                          f"(0..{num_classes - 1})")
    return y


def check_dense_ids(top: int, rows: int, counted: str) -> None:
    """Refuse class ids that run to ``top`` with only ``rows`` labelled rows: they are ids, not
    classes, and tables of one entry per class would not fit. ``counted`` says what was counted
    ("in 400 rows")."""
    if top >= rows:
        raise JaxselError(f"labels must be class ids 0..C-1: they run to {top} {counted}; renumber them "
                          f"(numpy.unique(labels, return_inverse=True))")


def check_indices(values, n: int | None, name: str, distinct: bool = False):
    """``values`` as an int64 array (m,) of row indices in [0, n) (``n`` None: any non-negative),
    checked: raise JaxselError for another rank, a bool mask (pass ``np.flatnonzero(mask)``), floats
    or another dtype, an index out of range, or (``distinct``: a subset of rows) a repeated index."""
    import numpy as np

    a = np.asarray(values)
    if a.ndim != 1 or (a.size and (a.dtype == bool or a.dtype.kind not in "iu")):
        hint = " (for a bool mask pass np.flatnonzero(mask); for a Selection, its .indices)"
        raise JaxselError(f"{name} must be a 1-D array of integer row indices, got shape {a.shape} of {a.dtype}{hint}")
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:  # would wrap to negative
        raise JaxselError(f"{name} must lie in [0, {2**63 if n is None else n}), got {a.min()}..{a.max()}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or (n is not None and a.max() >= n)):
        bounds = "be non-negative" if n is None else f"lie in [0, {n})"
        raise JaxselError(f"{name} must {bounds}, got {a.min()}..{a.max()}")
    if distinct and len(np.unique(a)) < len(a):
        rows, counts = np.unique(a, return_counts=True)
        raise JaxselError(f"{name} repeat {int((counts > 1).sum())} row(s) (row {int(rows[counts > 1][0])} "
                          f"{int(counts.max())} times): a subset names each row once")
    return a


def check_mask(values, n: int, name: str):
    """``values`` as a bool array (n,), one flag per row, checked: raise JaxselError for another
    shape or a non-bool dtype (row indices: pass ``np.isin(np.arange(n), rows)``)."""
    import numpy as np

    a = np.asarray(values)
    if a.shape != (n,) or a.dtype != bool:
        raise JaxselError(f"{name} must be a bool array of shape ({n},), one flag per train row, got shape {a.shape} "
                          f"of {a.dtype} (for row indices pass np.isin(np.arange({n}), rows))")
    return a


def check_embeddings(x, rows: int, name: str):
    """``x`` as a finite float array (rows, d), checked: raise JaxselError for another rank or row
    count, or NaN/inf values."""
    import numpy as np

    a = np.asarray(x)
    if a.ndim != 2 or a.shape[0] != rows or not np.issubdtype(a.dtype, np.number):
        raise JaxselError(f"{name} must be a numeric array ({rows}, d), one row per train row, got shape {a.shape} "
                          f"of {a.dtype}")
    if not np.isfinite(a).all():
        raise JaxselError(f"{name} holds NaN or inf values ({int((~np.isfinite(a)).any(axis=1).sum())} rows)")
    return a
