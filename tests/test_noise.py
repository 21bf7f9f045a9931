import numpy as np
import pytest

from jaxsel.data import noise
from jaxsel.errors import JaxselError


def _toy(n=400, k=20, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, c, n), rng.integers(0, k, n)


def test_flips_whole_clusters_and_duplicates_others():
    labels, assign = _toy()
    r = noise.corrupt(labels, assign, 3, flip_fraction=0.2, duplicate_fraction=0.1, copies=3, seed=1)
    assert len(r.flipped_clusters) == 4 and len(r.duplicated_clusters) == 2
    assert not set(r.flipped_clusters) & set(r.duplicated_clusters)
    n = len(labels)
    # the first n rows are the clean split in order; only flipped clusters change label, each by one shift
    assert np.array_equal(r.source[:n], np.arange(n))
    for c in range(20):
        rows = np.flatnonzero(assign == c)
        shift = (r.labels[rows] - labels[rows]) % 3
        assert len(set(shift.tolist())) == 1
        assert (shift[0] != 0) == (c in r.flipped_clusters)
        assert r.flipped[rows].all() == (c in r.flipped_clusters)
    # copies: exact repeats of the duplicated clusters' rows, same cluster id and label
    dup_rows = np.flatnonzero(np.isin(assign, r.duplicated_clusters))
    assert r.duplicate.sum() == 3 * len(dup_rows) and len(r.source) == n + 3 * len(dup_rows)
    extra = r.source[n:]
    assert np.array_equal(np.sort(extra), np.sort(np.tile(dup_rows, 3)))
    assert np.array_equal(r.assignment, assign[r.source])
    assert np.array_equal(r.labels[n:], r.labels[extra])
    assert r.corrupted.sum() == r.flipped.sum() + r.duplicate.sum()


def test_same_seed_same_corruption_and_zero_is_identity():
    labels, assign = _toy()
    a = noise.corrupt(labels, assign, 3, seed=5)
    b = noise.corrupt(labels, assign, 3, seed=5)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.source, b.source)
    z = noise.corrupt(labels, assign, 3, flip_fraction=0.0, duplicate_fraction=0.0)
    assert np.array_equal(z.labels, labels) and not z.corrupted.any()


@pytest.mark.parametrize("kw", [dict(flip_fraction=1.2), dict(flip_fraction=0.6, duplicate_fraction=0.5),
                                dict(copies=0)])
def test_bad_settings_are_one_line_errors(kw):
    labels, assign = _toy()
    with pytest.raises(JaxselError):
        noise.corrupt(labels, assign, 3, **kw)
