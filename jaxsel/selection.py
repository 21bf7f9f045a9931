"""A selection: the chosen clusters, the exported example indices, scores and provenance.

Exact budget rule (the MDP, every search and the export share it): picks are taken in order;
a pick of cluster j takes its next rows in the within-cluster order
(:func:`jaxsel.cluster.member_order`): the whole cluster (granularity "cluster", quota 0) or its
next ``quota`` rows (granularity "quota"; a cluster can be picked again until it is exhausted).
The pick that reaches the budget contributes only the rows that bring the total to exactly the
example budget (when the picks hold fewer examples, all of them). The proxy scores that same
take, so a selection's recorded score is the score of its exported rows.

Class balance (``balance`` "proportional" or "equal", :class:`ClassCaps`): every cluster is
label-pure and the example budget is split into per-class caps; a pick also takes no more rows
than its class has room for, and a cluster whose class is full cannot be picked, so the exported
rows hold exactly ``caps[c]`` examples of each class c.
"""

import base64
import hashlib
import json
import numbers
import os
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path

import numpy as np

from jaxsel.baselines import apportion
from jaxsel.errors import JaxselError, check_dense_ids, check_indices, check_labels, is_int, warn
from jaxsel.io import atomic_path, check_not_input, check_target, json_text, write_utf8, writes_files

FORMAT = "jaxsel.selection/1"
AGENTS = ("ppo", "dqn")  # the RL agents (jaxsel.agents.ppo, .dqn), also SelectConfig's fields holding their configs
# every selection method: RL, cluster searches, example-level baselines (see jaxsel.agents.select)
METHODS = (*AGENTS, "random-search", "greedy", "climb", "random", "stratified", "typical", "cleanlab", "full")


def parse_budget(text: str | float) -> float:
    """A budget as a fraction in (0, 1): ``0.05``, ``"0.05"``, ``"1/16"``, or a numpy or 0-d jax
    float (as its shortest decimal: ``np.float32(0.05)`` is 0.05, not 0.05000000074505806)."""
    if getattr(text, "shape", None) == () and np.asarray(text).dtype.name.startswith(("float", "bfloat")):
        text = str(np.asarray(text)[()])  # a numpy scalar's repr is its shortest round-tripping decimal
    try:
        value = float(text) if isinstance(text, numbers.Real) and not isinstance(text, bool) else float(Fraction(text))
    except (ValueError, ZeroDivisionError, TypeError):
        raise JaxselError(f"budget must be a number like 0.05 or 1/16, got {text!r}")
    if not 0 < value < 1:
        raise JaxselError(f"budget must be strictly between 0 and 1, got {text}")
    return value


def read_budget(value):
    """``value`` as a config's budget: text ("1/16") and numpy or 0-d jax numbers through
    :func:`parse_budget`, anything else as it is (the config's own check names a wrong type)."""
    return parse_budget(value) if isinstance(value, str) or getattr(value, "shape", None) == () else value


def budget_examples(budget: float, n: int) -> int:
    """The example budget for a fraction ``budget`` in (0, 1] of ``n`` >= 1 rows: rounded to the
    nearest whole number, a half to the even one (Python's ``round``: 0.05 of 8,530 rows is 426),
    at least one. Raises JaxselError for a budget outside (0, 1] or no rows."""
    if not is_int(n) or n < 1 or isinstance(budget, bool) or not 0 < budget <= 1:
        raise JaxselError(f"a budget needs a fraction in (0, 1] of at least one row, got {budget!r} of {n!r}")
    return max(1, int(round(budget * n)))


def checked_examples(budget: float, n: int, what: str = "a budget") -> int:
    """:func:`budget_examples`, with a warning when the fraction rounds to no example (one is
    taken) and JaxselError when it rounds to all ``n`` rows. ``what`` names the fraction."""
    if round(budget * n) < 1:
        warn(f"{what} of {budget:.10g} of {n} train rows rounds to no example: selecting 1", once=True)
    examples = budget_examples(budget, n)
    if examples >= n:
        raise JaxselError(f"{what} of {budget:.10g} of {n} train rows rounds to all of them: "
                          + ("choose a smaller budget, or the full method" if what == "a budget" else "choose a smaller one"))
    return examples


def check_budgets(budgets, n: int) -> None:
    """Check a run's ``budgets`` (fractions) against its ``n`` train rows before any work, for every
    method alike (:func:`checked_examples`: a warning for a budget rounding to no example,
    JaxselError for one rounding to all rows), and raise JaxselError when two select the same number
    of rows: a run would select, finetune and report that subset size twice under two names."""
    seen: dict[int, float] = {}
    for b in budgets:
        e = checked_examples(b, n)
        if e in seen:
            first, second = f"{seen[e]:.10g}", f"{b:.10g}"
            if first == second:  # 0.05 and 0.050000000001
                first, second = repr(float(seen[e])), repr(float(b))
            raise JaxselError(f"budgets {first} and {second} both select {e} of the {n} train examples: keep one")
        seen[e] = b


BALANCES = ("none", "proportional", "equal")
GRANULARITIES = ("cluster", "quota")  # a pick adds a whole cluster, or its next quota rows
FINALS = ("best", "greedy")  # an RL run's result: its best episode, or a greedy rollout


def check_balance(balance: str) -> None:
    """Raise JaxselError unless ``balance`` is one of :data:`BALANCES`."""
    if balance not in BALANCES:
        raise JaxselError(f"unknown balance {balance!r} (choose from {', '.join(BALANCES)})")


@dataclass(frozen=True)
class ClassCaps:
    """Per-class example caps of a class-balanced selection: the rows taken from the (label-pure)
    clusters of class c never exceed ``caps[c]``, and the caps sum to the example budget."""

    cluster_class: np.ndarray  # (K,) int64 class of each cluster
    caps: np.ndarray  # (C,) int64 examples allowed per class

    def room(self, take: np.ndarray) -> np.ndarray:
        """(K,) rows each cluster's class can still take given ``take`` (K,) rows per cluster."""
        used = np.bincount(self.cluster_class, weights=np.asarray(take), minlength=len(self.caps))
        return (self.caps - used.astype(np.int64))[self.cluster_class]


def class_caps(counts: np.ndarray, examples: int, balance: str) -> np.ndarray:
    """(C,) int64 examples per class for a budget of ``examples`` rows, given the pool's ``counts``
    (C,) rows per class: "proportional" to the counts (largest remainder, Hamilton's method),
    or "equal" (an equal share each; a class with fewer rows gives all it has and the rest is
    shared among the others, water-filling: the caps of the classes not given whole differ by at
    most one). Ties go to the lower class index. Raises
    JaxselError for an unknown ``balance``, a budget above the pool, or negative counts."""
    counts = np.asarray(counts, np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise JaxselError(f"class counts must be (C,) rows per class, none negative, got {counts.tolist()}")
    if balance not in BALANCES[1:]:
        raise JaxselError(f"unknown balance {balance!r} (choose from {', '.join(BALANCES)})")
    if not 0 < examples <= counts.sum():
        raise JaxselError(f"cannot balance {examples} examples over a pool of {counts.sum()}")
    if balance == "proportional":
        return apportion(counts, int(examples))
    # water-filling: the highest level L with sum(min(counts, L)) <= examples, then one row more for the
    # first classes with rows above L (repeated rounds of equal shares had left 52 beside 50: a round's
    # remainder row stayed with its class)
    low, high = 0, int(counts.max())
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if np.minimum(counts, mid).sum() <= examples else (low, mid - 1)
    caps = np.minimum(counts, low)
    caps[np.flatnonzero(counts > low)[:int(examples - caps.sum())]] += 1
    return caps


def balance_caps(clustering, labels: np.ndarray, examples: int, balance: str) -> ClassCaps | None:
    """The :class:`ClassCaps` of ``balance`` for picking ``examples`` rows of a clustering of the
    train rows with ``labels`` (N,); None for "none". Raises JaxselError for an unknown ``balance``
    or when a cluster holds more than one label (balance needs label-pure clusters: stratified
    k-means; clusters that happen to be label-pure are accepted)."""
    check_balance(balance)
    if balance == "none":
        return None
    labels, assignment = check_labels(labels, "labels", len(clustering.assignment)), np.asarray(clustering.assignment)
    if len(labels):
        check_dense_ids(int(labels.max()), len(labels), f"in {len(labels)} rows")
    k = len(clustering.sizes)
    low = np.full(k, np.iinfo(np.int64).max)
    high = np.full(k, -1)
    np.minimum.at(low, assignment, labels)
    np.maximum.at(high, assignment, labels)
    if (low != high).any():
        raise JaxselError(f"balance {balance!r} needs label-pure clusters, but {int((low != high).sum())} of {k} "
                          f"hold several labels: cluster each label separately ([cluster] stratified = true, "
                          f"or --stratified)")
    return ClassCaps(high, class_caps(np.bincount(labels, minlength=int(labels.max()) + 1), examples, balance))


def room(take: np.ndarray, budget: int, caps: ClassCaps | None = None) -> np.ndarray:
    """(K,) rows a pick of each cluster may add given ``take`` (K,): the budget left, and with
    ``caps`` no more than the cluster's class has room for."""
    left = np.full(len(take), int(budget) - int(np.sum(take)), np.int64)
    return left if caps is None else np.minimum(left, caps.room(take))


def open_clusters(sizes: np.ndarray, taken: np.ndarray, quota: int = 0, caps: ClassCaps | None = None) -> np.ndarray:
    """Indices of the clusters a pick may choose given ``taken`` (K,) rows per cluster: those not
    yet taken (whole clusters, ``quota`` 0) or not yet exhausted (``quota`` > 0), and with
    ``caps`` only those whose class has room."""
    ok = (taken < sizes) if quota else (taken == 0)
    return np.flatnonzero(ok if caps is None else ok & (caps.room(taken) > 0))


def pick_rows(sizes, taken, left: int, quota: int = 0):
    """Rows a pick adds (elementwise over clusters): min(rows left in the cluster, ``left`` rows of
    budget, ``quota`` or all). The one statement of the per-pick rule; the MDP's jit copy is
    :func:`jaxsel.agents.env.step_env`."""
    return np.minimum(np.minimum(np.asarray(sizes) - taken, left), quota or left)


def take_for(order, sizes: np.ndarray, budget: int, quota: int = 0, caps: ClassCaps | None = None) -> np.ndarray:
    """(K,) int32 rows taken per cluster under the exact budget rule for the pick order ``order``
    (-1 entries ignored): each pick adds the cluster's next ``quota`` rows (0: all of it) while
    they fit, the pick that reaches the budget (or with ``caps`` its class's cap) the part that
    fits; picks of exhausted clusters or full classes add nothing."""
    sizes = np.asarray(sizes)
    take = np.zeros(len(sizes), np.int32)
    left = int(budget)
    room = None if caps is None else caps.caps.copy()  # rows each class may still take
    for c in (int(c) for c in order if c >= 0):
        if left <= 0:
            break
        fits = left if room is None else min(left, int(room[caps.cluster_class[c]]))
        step = int(pick_rows(sizes[c], take[c], fits, quota))
        take[c] += step
        left -= step
        if room is not None:
            room[caps.cluster_class[c]] -= step
    return take


def rows_for(clustering, take: np.ndarray) -> np.ndarray:
    """Sorted train indices of a take (K,): the first ``take[j]`` rows of cluster j in the
    within-cluster order."""
    from jaxsel.cluster import member_order  # lazily: the CLI imports this module before jax
    rows, start = member_order(clustering)
    parts = [rows[start[j]:start[j] + t] for j, t in enumerate(np.asarray(take)) if t > 0]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def indices_for(clustering, order, budget: int, quota: int = 0, caps: ClassCaps | None = None) -> np.ndarray:
    """Sorted train indices of the picks ``order`` (see :func:`take_for`), trimmed to ``budget`` examples."""
    return rows_for(clustering, take_for(order, clustering.sizes, budget, quota, caps))


def quota_for(granularity: str, quota: int | None, horizon: int, budget: int) -> int:
    """Rows per pick: 0 for whole clusters (granularity "cluster"); for "quota", ``quota`` or else
    budget / horizon rounded up (at least 1)."""
    if granularity == "cluster":
        return 0
    if granularity != "quota":
        raise JaxselError(f"unknown granularity {granularity!r} ({' or '.join(GRANULARITIES)})")
    if quota is not None:
        if quota < 1:
            raise JaxselError(f"quota must be at least 1 example, got {quota}")
        return int(quota)
    if horizon < 1:
        raise JaxselError(f"horizon must be at least 1 pick, got {horizon}")
    return max(1, -(-int(budget) // int(horizon)))


def _equal(a, b) -> bool:
    """``a == b``, for numpy arrays (or None in place of one) element by element."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(a, b)
    return a == b


@dataclass
class Selection:
    """cluster_ids in pick order (a cluster recurs with quota picks; empty for example-level
    baselines); indices into the train split; scores from the proxy; metadata with the dataset
    fingerprint, config, seed, method, granularity, quota and jaxsel version. ``files``, once saved
    or loaded: the JSON and array files at that path (an attribute, not a field: not compared)."""

    cluster_ids: list[int]
    indices: np.ndarray
    scores: dict
    meta: dict = field(default_factory=dict)
    row_clusters: np.ndarray | None = None  # (n,) cluster of each selected row, when known

    def __eq__(self, other) -> bool:
        """Every field equal, the arrays element by element (the dataclass's own ``==`` asked numpy
        for the truth value of a whole array, a ValueError: break-it round 51)."""
        if not isinstance(other, Selection):
            return NotImplemented
        return all(_equal(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    def save(self, path: str | Path) -> None:
        """Write ``path`` (JSON) and ``path`` with suffix ``.indices.npy`` (and ``.clusters.npy``
        when the rows' clusters are known), each atomically, the JSON last with the digests of the
        arrays, so :meth:`load` can tell a set left half-written by an interrupted save. Raises
        JaxselError for indices that are not a 1-D array of distinct non-negative integers."""
        path = Path(path)
        indices = check_indices(self.indices, None, "selection rows", distinct=True)
        clusters = None if self.row_clusters is None else np.asarray(self.row_clusters, np.int64)
        if clusters is not None and clusters.shape != indices.shape:
            raise JaxselError(f"row_clusters must give one cluster per selected row, {indices.shape}, "
                              f"got {clusters.shape}")
        doc = {"format": FORMAT, "cluster_ids": [int(c) for c in self.cluster_ids], "num_examples": int(len(indices)),
               "scores": self.scores, "meta": self.meta,
               "digests": {"indices": digest(indices), "clusters": None if clusters is None else digest(clusters)}}
        text = json_text(doc, f"selection {path}")  # scores or meta JSON cannot hold: refused before any file is written
        with atomic_path(self.indices_path(path), suffix=".npy") as tmp:
            np.save(tmp, indices)
        if clusters is not None:
            with atomic_path(self.clusters_path(path), suffix=".npy") as tmp:
                np.save(tmp, clusters)
        write_utf8(path, text)
        if clusters is None:  # a file from an earlier save at this path would be read as this one's
            self.clusters_path(path).unlink(missing_ok=True)
        self.files = self._files_of(path)

    @classmethod
    def _files_of(cls, path: Path) -> tuple[Path, ...]:
        """The files a selection saved at ``path`` consists of: what :func:`export` must not overwrite."""
        return path, cls.indices_path(path), cls.clusters_path(path)

    @staticmethod
    def indices_path(path: Path) -> Path:
        """Beside ``path``: its name without ``.json``, then ``.indices.npy`` (``random.seed0`` ->
        ``random.seed0.indices.npy``, not ``random.indices.npy``, shared with ``random.seed1``)."""
        return _beside(path, ".indices.npy")

    @staticmethod
    def clusters_path(path: Path) -> Path:
        return _beside(path, ".clusters.npy")

    @classmethod
    def load(cls, path: str | Path) -> "Selection":
        path = Path(path)
        reading = path
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            ours = isinstance(doc, dict) and doc.get("format") == FORMAT
            reading = cls.indices_path(path)
            indices = np.load(reading) if ours else None  # another JSON has no .npy to look for
        except FileNotFoundError as e:
            raise JaxselError(f"selection file missing: {e.filename}")
        except (ValueError, OSError, EOFError) as e:  # JSONDecodeError is a ValueError
            if reading != path:
                raise JaxselError(f"{reading}: not a readable index file ({type(e).__name__}): make the selection again")
            raise JaxselError(f"{path}: not a readable selection file ({type(e).__name__})")
        if not ours:
            raise JaxselError(f"{path}: not a jaxsel selection file")
        _check_fields(doc, path)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise JaxselError(f"{path}: its index file holds a {indices.ndim}-D {indices.dtype} array, not row "
                              f"indices: make the selection again")
        indices = check_indices(indices, None, f"{path}: its index file's rows", distinct=True)
        if len(indices) != doc["num_examples"]:
            raise JaxselError(f"{path}: index file holds {len(indices)} rows, the JSON says {doc['num_examples']}")
        digests = doc.get("digests")  # absent in files saved before jaxsel recorded them
        clusters_file = cls.clusters_path(path)
        try:
            clusters = np.load(clusters_file) if clusters_file.exists() else None
        except (ValueError, OSError, EOFError) as e:
            raise JaxselError(f"{clusters_file}: not a readable array ({type(e).__name__}): make the selection again")
        if clusters is not None and (clusters.shape != indices.shape or clusters.dtype.kind not in "iu"
                                     or (clusters.size and clusters.min() < 0)):
            raise JaxselError(f"{clusters_file}: holds {clusters.shape} {clusters.dtype}, not one cluster id per "
                              f"selected row ({indices.shape}): make the selection again")
        if digests is not None:
            if digests["clusters"] is None:
                clusters = None
            if digest(indices) != digests["indices"] or (clusters is None) != (digests["clusters"] is None) \
                    or (clusters is not None and digest(clusters) != digests["clusters"]):
                raise JaxselError(f"{path}: its .npy files are not the ones saved with it (an interrupted or "
                                  f"mixed save?): make the selection again")
        sel = cls(doc["cluster_ids"], indices, doc["scores"], doc["meta"], clusters)
        sel.files = cls._files_of(path)
        return sel

    def apply(self, dd):
        """The selected rows of ``dd['train']``. Refuses a dataset whose fingerprint differs from the
        one recorded in ``meta["fingerprint"]``; a selection recorded without one (made by the
        library without ``meta``) is checked against the train split's class counts and label
        sequence it records (``train_label_counts``, ``train_labels_digest``:
        :func:`jaxsel.agents.select` records them) with a warning (other texts with the same labels
        pass: e.g. another stratified pool of data grouped by label), else with a warning only
        against the train split's size."""
        from jaxsel import code_version, data
        fp, want = data.dataset_fingerprint(dd), self.meta.get("fingerprint")
        if want is not None and fp != want:
            raise JaxselError(f"selection was made for another dataset ({self.meta.get('dataset', 'unnamed')}, fingerprint "
                              f"{want}; this one is {fp}): its texts, labels, columns or split options differ"
                              + (f", or this jaxsel reads them otherwise than the one that made it ("
                                 f"{self.meta['jaxsel_version']})" if self.meta.get("jaxsel_version") not in
                                 (None, code_version()) else "")
                              + ("" if "dataset" in self.meta else "; a selection of a pool made in Python "
                                 "(jaxsel.data.derive) applies to that pool only: export it from Python"))
        if want is None:
            self._check_train_labels(np.asarray(data.column(dd["train"], "label")))
        n, idx = len(dd["train"]), check_indices(self.indices, None, "selection rows", distinct=True)
        if len(idx) and int(idx.max()) >= n:
            raise JaxselError(f"selection holds row {int(idx.max())}, the train split only {n} rows")
        return dd["train"].select(idx.tolist())

    def _check_train_labels(self, labels: np.ndarray) -> None:
        """Refuse train ``labels`` (N,) whose class counts, or sequence (``train_labels_digest``:
        a stratified split with another seed keeps the counts), differ from those recorded, in a
        selection without a dataset fingerprint (one saved from the library was exported to any
        dataset with enough rows: a new user's test); warn when none are recorded."""
        want = self.meta.get("train_label_counts")
        if want is None:
            warn("the selection records neither its dataset's fingerprint nor its train class counts: "
                 "it cannot be checked against this dataset (only the rows' range is)", once=True)
            return
        have = np.bincount(labels, minlength=len(want)).tolist() if len(labels) else []
        if have != list(want):
            raise JaxselError(f"selection was made for a train split of {sum(want)} rows with class counts {list(want)}; "
                              f"this dataset's has {len(labels)} rows with {have}: another dataset, or other split options")
        recorded = self.meta.get("train_labels_digest")
        if recorded is not None and digest(np.asarray(labels, np.int64)) != recorded:
            raise JaxselError("selection was made for a train split with the same class counts but its labels in "
                              "another order: another split (seed or options) of the data, or another dataset")
        warn("the selection records no dataset fingerprint: apply checked only the train labels' counts and order, "
             "which other pools of label-grouped data share (e.g. stratified_subsample of tweets); pass "
             "meta={'fingerprint': jaxsel.data.dataset_fingerprint(dd)} to select to check the texts too", once=True)


def _beside(path: Path, suffix: str) -> Path:
    """``path`` without a ``.json`` suffix, ``suffix`` appended."""
    path = Path(path)
    return path.with_name((path.stem if path.suffix.lower() == ".json" else path.name) + suffix)


def missing_classes(label_counts, held_counts) -> list[int]:
    """The classes a reference holds (``held_counts`` (C,) > 0: the train split's, or every split's)
    that a subset's ``label_counts`` (C,) miss: a model finetuned on the subset cannot predict them."""
    return np.flatnonzero((np.asarray(label_counts) == 0) & (np.asarray(held_counts) > 0)).tolist()


def class_list(ids, names) -> str:
    """"class 'a'" or "classes 'a', 'b, c'": the classes ``ids`` by their ``names``, quoted (a name may
    hold a comma or a newline) for a message."""
    return f"{'class' if len(ids) == 1 else 'classes'} {', '.join(repr(names[i]) for i in ids)}"


def no_example_of(ids, names) -> str:
    """"no example of class 'a'; a model finetuned on it cannot predict that class" (or of classes
    ..., those classes): what a warning says of a subset missing the classes ``ids`` (:func:`class_list`)."""
    return (f"no example of {class_list(ids, names)}; a model finetuned on it cannot predict "
            f"{'that class' if len(ids) == 1 else 'those classes'}")


def digest(a: np.ndarray) -> str:
    """SHA-256 (hex) of an int64 array's bytes: a selection's index or cluster file, and the rows a
    finetune's checkpoints and a run's finetune stage are keyed by."""
    return hashlib.sha256(np.ascontiguousarray(a, np.int64).tobytes()).hexdigest()


EXPORT_FORMATS = ("jsonl", "parquet", "csv", "arrow")
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def export_format(path: str | Path, fmt: str | None = None) -> str:
    """The export format: ``fmt`` if given, else the one ``path``'s suffix names (.jsonl/.json,
    .parquet, .csv, .arrow), else (no suffix) jsonl. Raises JaxselError for an unknown format, a
    suffix that names another one (``kept.csv`` with ``fmt="jsonl"``), or, without ``fmt``, a
    suffix that names no export format (``kept.xlsx``)."""
    suffix = Path(path).suffix.lower()
    named = SUFFIXES.get(suffix)
    if fmt is None:
        if suffix and named is None:
            raise JaxselError(f"{path}: {suffix} is not an export format; use one of {', '.join(SUFFIXES)} "
                              f"(or name the format: --format / fmt=)")
        return named or "jsonl"
    if fmt not in EXPORT_FORMATS:
        raise JaxselError(f"unknown export format {fmt!r} (choose from {', '.join(EXPORT_FORMATS)})")
    if named is not None and named != fmt:
        raise JaxselError(f"{path} names a {named} file but the format is {fmt}: change one of them")
    return fmt


def export(sel: Selection, dd, path: str | Path, fmt: str | None = None, *, complement: bool = False,
           source: str | None = None, source_columns=None) -> Path:
    """Write the KEPT rows of ``dd['train']`` (``complement``: the rows NOT kept) to ``path`` through
    ``datasets`` (``fmt``: jsonl, parquet, csv, or arrow = ``save_to_disk`` folder), atomically, with
    columns ``text``, ``label`` (the class name), ``row`` (index in the train split), ``source_row``
    (0-based row of the source file, header not counted: what joins back to the user's own columns),
    ``cluster`` (-1 when unknown: always for ``complement``, since a selection records the clusters
    of its kept rows only) and ``kept`` (true for selected rows), plus a sidecar ``PATH.jaxsel.json``
    naming the source dataset, the method, the budget and the jaxsel version. ``source_columns``: a
    pandas DataFrame of the source's other columns, row i for source row i
    (:func:`jaxsel.data.source_columns`); each row's values follow its own columns (empty for a row
    of unknown source), a name already taken prefixed with ``user_`` (until it is free). ``fmt`` None: from the
    path's suffix (:func:`export_format`). Raises JaxselError for an unknown format, one the suffix
    contradicts, a ``path`` (or its sidecar) that cannot be written or would overwrite the source file
    or the selection's own files (where it was saved or loaded),
    source columns with duplicate names, or a dataset whose fingerprint
    differs from the selection's."""
    import datasets  # lazily: the CLI imports this module first

    if not isinstance(sel, Selection) or not isinstance(dd, datasets.DatasetDict):
        raise JaxselError(f"export(sel, dd, path) takes a Selection and a DatasetDict, got {type(sel).__name__} and "
                          f"{type(dd).__name__}")
    if source_columns is not None and not hasattr(source_columns, "columns"):
        raise JaxselError(f"source_columns takes a pandas DataFrame, got {type(source_columns).__name__}: for a file, "
                          f"pass jaxsel.data.source_columns(path, text_col=..., label_col=...)")
    from jaxsel import code_version
    from jaxsel.data import column, source_file
    fmt = export_format(path, fmt)
    check_not_input(path, source, sel.meta.get("dataset"), source_file(dd), *getattr(sel, "files", ()))
    full = Path(os.path.abspath(path))  # "." names the folder it is
    sidecar = full.with_name(full.name + ".jaxsel.json")
    check_target(sidecar, folder=False)  # before the data file: never one without the other
    sel.apply(dd)  # the fingerprint and row-range checks
    train, path = dd["train"], Path(path)
    n = len(train)
    cluster_of = np.full(n, -1, np.int64)
    if sel.row_clusters is not None:
        cluster_of[sel.indices] = sel.row_clusters
    rows = np.setdiff1d(np.arange(n), sel.indices) if complement else np.asarray(sel.indices, np.int64)
    kept = train.select(rows.tolist())
    names = train.features["label"].names
    source_rows = column(kept, "source_row") if "source_row" in kept.column_names else [-1] * len(rows)
    out = datasets.Dataset.from_dict({"text": column(kept, "text"), "label": [names[i] for i in column(kept, "label")],
                                      "row": rows.tolist(), "source_row": source_rows,
                                      "cluster": cluster_of[rows].tolist(), "kept": [not complement] * len(rows)})
    renamed, described = {}, {}
    if source_columns is not None:
        renamed, described = _source_names(source_columns, out.column_names)
        out = datasets.concatenate_datasets([out, _source_table(source_columns, source_rows, renamed)], axis=1)
    about = json_text({
        "contents": ("the examples NOT selected (the complement of the selection)" if complement
                     else "the KEPT examples: the rows the selection chose"),
        "rows": int(len(rows)), "format": fmt, "source_dataset": source or sel.meta.get("dataset"),
        "fingerprint": sel.meta.get("fingerprint"), "method": sel.meta.get("method"),
        "budget": sel.meta.get("budget"), "budget_examples": sel.meta.get("budget_examples"),
        "selection_seed": sel.meta.get("seed"), "jaxsel_version": code_version(),
        "columns": {"text": "the example", "label": "its class name", "row": "index in the train split",
                    "source_row": "its 0-based row in the source (a file's data rows, header not counted; -1: unknown)",
                    "cluster": "its cluster (-1: unknown, as for every row not selected: a selection records the "
                               "clusters of its kept rows only)", "kept": "true for selected rows",
                    **described}}, str(sidecar))
    if writes_files():  # an earlier export's sidecar goes first: interrupted, the rows are never described wrongly
        sidecar.unlink(missing_ok=True)
    bars_on = datasets.is_progress_bar_enabled()
    if bars_on:
        datasets.disable_progress_bars()  # its "Creating json from Arrow format" bars
    try:
        _write(out, path, fmt)
    finally:
        if bars_on:
            datasets.enable_progress_bars()
    write_utf8(sidecar, about)
    return path


def _source_names(frame, ours: list[str]) -> tuple[dict, dict[str, str]]:
    """({frame's column: its export name}, {export name: what it holds}) of the source's columns
    beside ``ours``: a column keeps the name its file gives it, ``user_`` prefixed until free (a
    file's repeated name too); a column with no name is named ``columnN`` by its 1-based place.
    ``frame.attrs["header"]`` (:func:`jaxsel.data.source_columns`) maps each column to (its name
    in the file, its place there): a CSV's differ from the names pandas made up ("x.1", "Unnamed:
    0"); without it, a column's name and place are the frame's."""
    from jaxsel.data import repeated_names
    header = frame.attrs.get("header", {})
    given = {c: header.get(c, (str(c), i)) for i, c in enumerate(frame.columns)}
    base = {c: name or f"column{place + 1}" for c, (name, place) in given.items()}
    repeated = set(repeated_names([name for name, _ in given.values() if name]))
    taken, names, described = set(ours) | set(base.values()), {}, {}
    for c in frame.columns:
        name = base[c]
        while name in ours or name in names.values() or (name != base[c] and name in taken):
            name = f"user_{name}"
        names[c], (source, place) = name, given[c]
        taken.add(name)
        described[name] = (f"the source's column {place + 1}, which has no name" if not source
                           else f"the source's column {source!r}" + (f" (column {place + 1} of its header, where "
                                                                      "the name repeats)" if source in repeated else ""))
    return names, described


def _source_table(frame, source_rows: list[int], names: dict[str, str]):
    """A datasets.Dataset of ``frame``'s rows ``source_rows`` (-1: all empty), columns renamed by
    ``names``; bytes as base64 text, and a column Arrow cannot type (mixed kinds of values) as
    JSON text (strings as they are)."""
    import datasets
    import pandas as pd

    if len(set(names.values())) < len(names):
        raise JaxselError(f"the source columns have duplicate names: {list(map(str, frame.columns))}")
    rows = np.asarray(source_rows, np.int64)
    if len(rows) and rows.max() >= len(frame):
        raise JaxselError(f"the source has {len(frame)} rows but the selection names source row {rows.max()}: "
                          f"has the file changed since the selection?")
    part = frame.iloc[np.maximum(rows, 0)].reset_index(drop=True).rename(columns=names)
    part = part.astype(object).where(pd.notna(part), None)
    part.loc[rows < 0, :] = None
    columns = []
    for c in part.columns:
        values = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in part[c].tolist()]
        try:
            columns.append(datasets.Dataset.from_dict({c: values}))
        except (TypeError, ValueError, OverflowError):  # pyarrow's ArrowInvalid / ArrowTypeError
            columns.append(datasets.Dataset.from_dict({c: [_json_text(v) for v in values]}))
    return datasets.concatenate_datasets(columns, axis=1)


def _json_default(value):
    """What ``json.dumps`` cannot write natively: dates and times as ISO 8601 text, numpy values
    and arrays as numbers and lists, anything else (decimals) as its text."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _json_text(value) -> str | None:
    """``value`` as JSON text (a string as it is, None as None; numpy arrays as lists)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def is_arrow_export(folder: Path) -> bool:
    """Whether ``folder`` holds only what ``datasets.Dataset.save_to_disk`` writes (an earlier arrow
    export, which a new one may replace)."""
    names = [f.name for f in folder.iterdir()]
    return "state.json" in names and all(
        n in ("state.json", "dataset_info.json") or (n.startswith("data-") and n.endswith(".arrow")) for n in names)


def _write(table, path: Path, fmt: str) -> None:
    """``table`` (a datasets.Dataset) to ``path`` as ``fmt``, atomically."""
    import pandas as pd
    with atomic_path(path, folder=fmt == "arrow", replaces=is_arrow_export) as tmp:
        if fmt == "jsonl":  # the standard library's writer: floats round-trip (pandas' kept 10 digits), ISO dates
            with open(tmp, "w", encoding="utf-8") as f:
                for batch in table.iter(batch_size=1024):
                    for values in zip(*batch.values()):
                        f.write(json.dumps(dict(zip(batch, values)), ensure_ascii=False, default=_json_default) + "\n")
        elif fmt == "parquet":
            table.to_parquet(str(tmp))
        elif fmt == "csv":  # lists and mappings as JSON text, not Python's repr
            # integers with empty cells stay Python integers (float64 wrote "1.0" and rounded ids past 2**53)
            frame = table.with_format("arrow")[:].to_pandas(integer_object_nulls=True)
            for c in frame.columns[frame.dtypes == object]:  # object columns built as such: Series.map infers floats
                frame[c] = pd.Series([_json_text(v) if isinstance(v, (list, tuple, dict, np.ndarray)) else v
                                      for v in frame[c]], index=frame.index, dtype=object)
            frame.to_csv(str(tmp), index=False)
        else:
            table.save_to_disk(str(tmp))


# what the commands read back from a selection's meta (export, finetune --selection, apply)
META_FIELDS = {"dataset": (str,), "data_options": (dict,), "data_spec": (dict,), "fingerprint": (str,),
               "train_labels_digest": (str,), "variant": (str,), "train_label_counts": (list,), "label_counts": (list,)}
COUNT_FIELDS = ("train_label_counts", "label_counts")
SELECTION_FIELDS = {"num_examples": (int,), "cluster_ids": (list,), "scores": (dict,), "meta": (dict,),
                    "digests": (dict, type(None))}


def _check_fields(doc: dict, path: Path) -> None:
    """Raise JaxselError unless a selection JSON ``doc`` holds every field :meth:`Selection.save`
    writes, of its type (a hand-edited or truncated-then-repaired file raised KeyError)."""
    for name, types in SELECTION_FIELDS.items():
        if name not in doc and type(None) not in types:
            raise JaxselError(f"{path}: not a complete selection file (no {name!r}): make the selection again")
        if not isinstance(doc.get(name), types) or isinstance(doc.get(name), bool):
            raise JaxselError(f"{path}: {name!r} must be of type "
                              f"{' or '.join(t.__name__ for t in types if t is not type(None))}, got "
                              f"{type(doc.get(name)).__name__}: make the selection again")
    if not all(is_int(c) for c in doc["cluster_ids"]):
        raise JaxselError(f"{path}: 'cluster_ids' must be integers: make the selection again")
    for name, types in META_FIELDS.items():
        value = doc["meta"].get(name)
        if value is not None and (not isinstance(value, types) or (
                name in COUNT_FIELDS and not all(is_int(v) and v >= 0 for v in value))):
            raise JaxselError(f"{path}: meta {name!r} must be "
                              f"{'a list of counts' if name in COUNT_FIELDS else ' or '.join(t.__name__ for t in types)}, "
                              f"got {json.dumps(value)[:60]}: make the selection again")
    digests = doc.get("digests")
    if digests is not None and not (isinstance(digests.get("indices"), str)
                                    and isinstance(digests.get("clusters"), (str, type(None)))):
        raise JaxselError(f"{path}: 'digests' must name the indices' and clusters' digests: make the selection again")
