"""Example-level baseline subsets of exactly a budget's size: what a data selection must beat.

- ``random``: a seeded uniform sample (:func:`random_indices`).
- ``stratified``: stratified random sampling with proportional allocation (Cochran, *Sampling
  Techniques*, 1977, ch. 5): the budget is split over classes in proportion to their counts,
  each class's share over the clusters holding that class in proportion to its rows there, and
  each (class, cluster) cell is sampled uniformly. Same label mix as the pool, same spread over
  the embedding space: the honest comparator for a cluster-based selection.
- ``typical``: cluster-proportional quotas, and in every cluster the members nearest its
  centroid (the k-means-with-quotas recipe of TypiClust, Hacohen et al., "Active Learning on a
  Budget", ICML 2022, with distance to the centroid as the typicality).
- ``cleanlab``: a seeded uniform sample of the rows that confident learning does not flag as
  label issues (:func:`jaxsel.label_issues.find`: cleanlab on the ridge proxy's
  leave-one-cluster-out probabilities).

Every function returns sorted, distinct train-row indices (int64) and is deterministic in its seed.
"""

from __future__ import annotations

import numpy as np

from jaxsel.errors import JaxselError, check_mask, is_int

METHODS = ("random", "stratified", "typical", "cleanlab")


def random_indices(n: int, examples: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform sample of ``examples`` of ``n`` rows: the ``random``
    baseline (an example-level subset, what users mean by a random subset)."""
    _check(n, examples, seed)
    return np.sort(np.random.default_rng(seed).choice(n, examples, replace=False))


def indices(method: str, examples: int, seed: int, *, labels: np.ndarray, clustering,
            x: np.ndarray | None = None, issues: np.ndarray | None = None) -> np.ndarray:
    """The ``method`` baseline (one of :data:`METHODS`) of ``examples`` rows. labels: (N,) train
    labels; clustering: of the train rows; x: (N, d) its embeddings (needed by ``typical``);
    issues: (N,) bool flagged label issues (needed by ``cleanlab``)."""
    if method == "random":
        return random_indices(len(labels), examples, seed)
    if method == "stratified":
        return stratified_indices(labels, clustering.assignment, examples, seed)
    if method == "typical":
        if x is None:
            raise JaxselError("the typical baseline needs the train embeddings: agents.select(..., train_x=) (N, d)")
        return typical_indices(x, clustering, examples, seed)
    if method == "cleanlab":
        if issues is None:
            raise JaxselError("the cleanlab baseline needs the flagged label issues")
        keep = np.flatnonzero(~check_mask(issues, len(labels), "issues"))
        check_unflagged(len(keep), examples)
        return np.sort(keep[random_indices(len(keep), examples, seed)]).astype(np.int64)
    raise JaxselError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")


def check_unflagged(kept: int, examples: int) -> None:
    """JaxselError when the cleanlab baseline's ``kept`` unflagged rows are fewer than its budget's
    ``examples``."""
    if examples > kept:
        raise JaxselError(f"cleanlab: only {kept} examples are not flagged, fewer than the budget of {examples}")


def apportion(weights: np.ndarray, total: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """(len(weights),) int64 shares of ``total`` proportional to ``weights`` (largest remainder,
    Hamilton's method; ties broken at random by ``rng``, or to the lower index without one). Shares
    sum to ``total`` and, when ``total <= weights.sum()`` with integer weights, never exceed their
    weight. Raises JaxselError for a total that is not a whole number >= 0, or weights that are not
    (K,) finite numbers >= 0 with a positive sum."""
    w = np.asarray(weights, np.float64)
    if not is_int(total) or total < 0:
        raise JaxselError(f"cannot apportion {total!r}: the total must be a whole number >= 0")
    if w.ndim != 1 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise JaxselError(f"cannot apportion {total} over weights {w.tolist()[:10]}: they must be finite, none "
                          f"negative, with a positive sum")
    exact = w / w.sum() * total
    share = np.floor(exact).astype(np.int64)
    left = int(total - share.sum())
    if left:
        frac = exact - share
        order = (np.argsort(-frac, kind="stable") if rng is None  # largest remainder first
                 else np.lexsort((rng.random(len(w)), -frac)))
        share[order[:left]] += 1
    return share


def stratified_indices(labels: np.ndarray, assignment: np.ndarray, examples: int, seed: int) -> np.ndarray:
    """Class-proportional, then cluster-proportional (within each class) random sample of
    ``examples`` rows. labels, assignment: (N,) ints."""
    labels, assignment = np.asarray(labels), np.asarray(assignment)
    _check(len(labels), examples, seed)
    if assignment.shape != labels.shape:
        raise JaxselError(f"assignment has shape {assignment.shape}, labels {labels.shape}: one cluster per row")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    out = []
    for c, q in zip(classes, apportion(counts, examples, rng)):
        rows = np.flatnonzero(labels == c)
        cells, sizes = np.unique(assignment[rows], return_counts=True)
        for j, m in zip(cells, apportion(sizes, int(q), rng)):
            if m:
                out.append(rng.choice(rows[assignment[rows] == j], int(m), replace=False))
    return np.sort(np.concatenate(out)).astype(np.int64)


def typical_indices(x: np.ndarray, clustering, examples: int, seed: int) -> np.ndarray:
    """Cluster-proportional quotas of ``examples`` rows, each filled with the cluster's members
    nearest its centroid (:func:`jaxsel.cluster.typical_order`). x: (N, d) the embeddings the
    clustering was fitted on."""
    from jaxsel.cluster import member_order, typical_order
    _check(len(clustering.assignment), examples, seed)
    rows, start = member_order(typical_order(clustering, x))
    quotas = apportion(np.asarray(clustering.sizes), examples, np.random.default_rng(seed))
    return np.sort(np.concatenate([rows[start[j]:start[j] + q] for j, q in enumerate(quotas) if q])).astype(np.int64)


def _check(n: int, examples: int, seed: int) -> None:
    """Raise JaxselError unless ``examples`` is a whole number in 1..``n`` and ``seed`` one >= 0."""
    if not is_int(examples) or not 0 < examples <= n:
        raise JaxselError(f"cannot choose {examples!r} of {n} training examples (a whole number from 1 to {n})")
    if not is_int(seed) or seed < 0:
        raise JaxselError(f"seed must be a whole number >= 0, got {seed!r}")
