"""The paper's "noisy and redundant data" setting, with known truth.

``corrupt`` takes a clean train split that is already clustered and (1) flips the labels of every
example in a random ``flip_fraction`` of the clusters (each flipped cluster gets one random
non-zero shift, ``y -> (y + s) mod C``, so the cluster is consistently mislabelled), then
(2) appends ``copies`` exact copies of every example of a random ``duplicate_fraction`` of the
other clusters. Copies keep their cluster id (identical text, identical embedding), so a duplicated
cluster is ``copies + 1`` times larger but no more informative. Validation and test are never
touched. The result says which rows are corrupted, so a report can count what each method chose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxsel.errors import JaxselError


@dataclass(frozen=True)
class Corruption:
    """Rows of the corrupted train split: ``source`` (index into the clean train split), ``labels``,
    ``assignment`` (cluster id); ``flipped`` / ``duplicate`` flag corrupted rows; the cluster ids
    chosen for each kind."""

    source: np.ndarray
    labels: np.ndarray
    assignment: np.ndarray
    flipped: np.ndarray
    duplicate: np.ndarray
    flipped_clusters: np.ndarray
    duplicated_clusters: np.ndarray

    @property
    def corrupted(self) -> np.ndarray:
        return self.flipped | self.duplicate


def corrupt(labels: np.ndarray, assignment: np.ndarray, num_classes: int, *, flip_fraction: float = 0.2,
            duplicate_fraction: float = 0.1, copies: int = 3, seed: int = 0) -> Corruption:
    """Flip the labels of a fraction of clusters and duplicate another fraction (see module doc)."""
    labels, assignment = np.asarray(labels, np.int64), np.asarray(assignment, np.int64)
    for name, f in (("flip_fraction", flip_fraction), ("duplicate_fraction", duplicate_fraction)):
        if not 0 <= f < 1:
            raise JaxselError(f"{name} must be in [0, 1), got {f}")
    if flip_fraction + duplicate_fraction >= 1:
        raise JaxselError("flip_fraction + duplicate_fraction must leave some clusters clean")
    if copies < 1 and duplicate_fraction > 0:
        raise JaxselError(f"copies must be >= 1, got {copies}")
    k = int(assignment.max()) + 1
    rng = np.random.default_rng(seed)
    perm = rng.permutation(k)
    n_flip, n_dup = int(round(flip_fraction * k)), int(round(duplicate_fraction * k))
    flip_c, dup_c = np.sort(perm[:n_flip]), np.sort(perm[n_flip:n_flip + n_dup])
    shift = np.zeros(k, np.int64)
    shift[flip_c] = rng.integers(1, num_classes, size=n_flip)
    new = (labels + shift[assignment]) % num_classes
    extra = np.flatnonzero(np.isin(assignment, dup_c))
    source = np.concatenate([np.arange(len(labels))] + [extra] * copies)
    dup = np.zeros(len(source), bool)
    dup[len(labels):] = True
    return Corruption(source, new[source], assignment[source], np.isin(assignment[source], flip_c), dup,
                      flip_c, dup_c)
