"""Noisy and redundant variants of a clustered train split, with known truth.

Kinds of label noise (``kind``), each flagging the rows it changes:

- ``"clusters"`` (the paper's setting; the default): every example of a random ``flip_fraction`` of
  the clusters gets one random non-zero shift, ``y -> (y + s) mod C``, so a cluster is consistently
  mislabelled.
- ``"source"``: a random ``flip_fraction`` of the clusters stand for bad sources or annotators:
  each gets a flip rate drawn uniformly from ``rate_range`` (default 20-60%) and that share of its
  rows is relabelled to a random other class; the other clusters stay clean (MetaHate's situation:
  a corpus merged from sources of uneven quality).
- ``"instance"``: the ``flip_fraction`` of all rows that a weak classifier trained on other data
  finds most ambiguous are relabelled toward its prediction (a ridge classifier on the embeddings,
  cross-fitted on two halves, so no row is scored by a model that saw it; the rows with the
  smallest margin of their label over the best other class flip to that class). Pretrained models
  shrug off uniform noise but not noise that looks plausible.

Redundancy: ``copies`` copies of every example of a random ``duplicate_fraction`` of the clusters
(among those whose labels were not flipped) are appended, keeping their cluster id; exact copies
by default, or with ``near_duplicates`` perturbed ones (each word dropped with probability 0.1,
then one random pair of neighbouring words swapped), whose texts the result carries.
Validation and test are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxsel.errors import JaxselError, check_labels

KINDS = ("clusters", "source", "instance")


@dataclass(frozen=True)
class Corruption:
    """Rows of the corrupted train split: ``source`` (index into the clean train split), ``labels``,
    ``assignment`` (cluster id); ``flipped`` / ``duplicate`` flag corrupted rows;
    ``flipped_clusters`` (the clusters whose labels were changed: all of them, the bad sources, or
    none for instance noise) and ``duplicated_clusters``; ``copy_texts``: the texts of the appended
    copies when they are near duplicates (None: exact copies)."""

    source: np.ndarray
    labels: np.ndarray
    assignment: np.ndarray
    flipped: np.ndarray
    duplicate: np.ndarray
    flipped_clusters: np.ndarray
    duplicated_clusters: np.ndarray
    copy_texts: list[str] | None = None

    @property
    def corrupted(self) -> np.ndarray:
        return self.flipped | self.duplicate


def perturb(text: str, rng: np.random.Generator, drop: float = 0.1) -> str:
    """A near duplicate of ``text``: each word dropped with probability ``drop`` (one always kept),
    then one random pair of neighbouring words swapped."""
    words = text.split()
    if not words:
        return text
    kept = [w for w in words if rng.random() >= drop] or [words[int(rng.integers(len(words)))]]
    if len(kept) >= 2:
        i = int(rng.integers(len(kept) - 1))
        kept[i], kept[i + 1] = kept[i + 1], kept[i]
    return " ".join(kept)


def ambiguity(x: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, lam: float = 1.0):
    """(margin (n,), best other class (n,)) of each row's label under a ridge classifier on ``x``
    (n, d) fitted on the other half of the rows (two seeded folds)."""
    n = len(labels)
    xb = np.concatenate([np.asarray(x, np.float64), np.ones((n, 1))], 1)
    y = np.zeros((n, num_classes))
    y[np.arange(n), labels] = 1.0  # one-hot without a (C, C) identity
    fold = np.zeros(n, int)
    fold[np.random.default_rng(seed).permutation(n)[: n // 2]] = 1
    scores = np.zeros((n, num_classes))
    for f in (0, 1):
        fit, out = fold != f, fold == f
        w = np.linalg.solve(xb[fit].T @ xb[fit] + lam * np.eye(xb.shape[1]), xb[fit].T @ y[fit])
        scores[out] = xb[out] @ w
    other = scores.copy()
    other[np.arange(n), labels] = -np.inf
    best = other.argmax(1)
    return scores[np.arange(n), labels] - other[np.arange(n), best], best


def corrupt(labels: np.ndarray, assignment: np.ndarray, num_classes: int, *, flip_fraction: float = 0.2,
            duplicate_fraction: float = 0.1, copies: int = 3, seed: int = 0, kind: str = "clusters",
            rate_range: tuple[float, float] = (0.2, 0.6), near_duplicates: bool = False,
            x: np.ndarray | None = None, texts: list[str] | None = None) -> Corruption:
    """Corrupt a clustered train split (see the module doc). ``labels`` (n,), ``assignment`` (n,);
    ``x`` (n, d) embeddings for ``kind="instance"``; ``texts`` (n,) for ``near_duplicates``.
    ``flip_fraction`` is a share of clusters ("clusters", "source") or of rows ("instance").
    Raises JaxselError for settings out of range or missing inputs."""
    labels = check_labels(labels, "labels", len(assignment), num_classes)  # ids past C used to wrap around
    if num_classes < 2:
        raise JaxselError(f"label noise needs at least two classes, got num_classes={num_classes}")
    assignment = np.asarray(assignment, np.int64)
    if kind not in KINDS:
        raise JaxselError(f"unknown noise kind {kind!r} (choose from {', '.join(KINDS)})")
    for name, f in (("flip_fraction", flip_fraction), ("duplicate_fraction", duplicate_fraction)):
        if not 0 <= f < 1:
            raise JaxselError(f"{name} must be in [0, 1), got {f}")
    if kind != "instance" and flip_fraction + duplicate_fraction >= 1:
        raise JaxselError("flip_fraction + duplicate_fraction must leave some clusters clean")
    if copies < 1 and duplicate_fraction > 0:
        raise JaxselError(f"copies must be >= 1, got {copies}")
    if not 0 <= rate_range[0] <= rate_range[1] <= 1:
        raise JaxselError(f"rate_range must be 0 <= low <= high <= 1, got {tuple(rate_range)}")
    if kind == "instance" and (x is None or len(x) != len(labels)):
        raise JaxselError("instance noise needs the train embeddings (one row per label)")
    if near_duplicates and (texts is None or len(texts) != len(labels)):
        raise JaxselError("near duplicates need the train texts (one per label)")
    ids = np.unique(assignment)  # the clusters with rows (0..K-1 for jaxsel's clusterings: then as before)
    rng = np.random.default_rng(seed)
    perm = ids[rng.permutation(len(ids))]
    n_flip = 0 if kind == "instance" else int(round(flip_fraction * len(ids)))
    n_dup = int(round(duplicate_fraction * len(ids)))
    flip_c, dup_c = np.sort(perm[:n_flip]), np.sort(perm[n_flip:n_flip + n_dup])
    if kind == "clusters":
        shift = np.zeros(int(assignment.max()) + 1, np.int64)
        shift[flip_c] = rng.integers(1, num_classes, size=n_flip)
        new = (labels + shift[assignment]) % num_classes
    elif kind == "source":
        new = labels.copy()
        for c, rate in zip(flip_c, rng.uniform(*rate_range, size=n_flip)):
            rows = np.flatnonzero(assignment == c)
            hit = rng.choice(rows, int(round(rate * len(rows))), replace=False)
            new[hit] = (labels[hit] + rng.integers(1, num_classes, size=len(hit))) % num_classes
    else:
        margin, best = ambiguity(x, labels, num_classes, seed)
        order = rng.permutation(len(labels))  # random order among equal margins
        hit = order[np.argsort(margin[order], kind="stable")[:int(round(flip_fraction * len(labels)))]]
        new = labels.copy()
        new[hit] = best[hit]
    extra = np.flatnonzero(np.isin(assignment, dup_c))
    source = np.concatenate([np.arange(len(labels))] + [extra] * copies)
    dup = np.zeros(len(source), bool)
    dup[len(labels):] = True
    copy_texts = [perturb(texts[i], rng) for i in source[len(labels):]] if near_duplicates else None
    flipped = new[source] != labels[source] if kind != "clusters" else np.isin(assignment[source], flip_c)
    return Corruption(source, new[source], assignment[source], flipped, dup, flip_c, dup_c, copy_texts)
