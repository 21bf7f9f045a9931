"""Example-level baselines: exact sizes, proportional allocation, typicality against brute force."""

import numpy as np
import pytest

from jaxsel import baselines, cluster
from jaxsel.errors import JaxselError


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    labels = rng.choice(3, 600, p=[0.6, 0.3, 0.1])
    return x, labels, cluster.kmeans(x, 20, seed=0)


def test_apportion_is_hamiltons_method():
    rng = np.random.default_rng(0)
    assert baselines.apportion(np.array([1, 1, 2]), 4, rng).tolist() == [1, 1, 2]
    assert baselines.apportion(np.array([6, 3, 1]), 7, rng).tolist() == [4, 2, 1]  # 4.2, 2.1, 0.7: largest rest
    for _ in range(50):
        w = rng.integers(1, 40, rng.integers(2, 30))
        total = int(rng.integers(0, w.sum() + 1))
        share = baselines.apportion(w, total, rng)
        assert share.sum() == total and (share <= w).all()
        assert np.abs(share - w / w.sum() * total).max() < 1  # within one of the exact quota


def test_stratified_keeps_the_label_mix_and_the_spread(pool):
    x, labels, c = pool
    for examples in (30, 100, 599):
        idx = baselines.stratified_indices(labels, c.assignment, examples, seed=1)
        assert len(idx) == examples == len(np.unique(idx))
        counts = np.bincount(labels[idx], minlength=3)
        assert np.abs(counts - np.bincount(labels) / len(labels) * examples).max() < 1
        # within every class, each cluster's share is its proportional quota rounded up or down
        for cls in range(3):
            rows = labels == cls
            want = np.bincount(c.assignment[rows], minlength=c.k) / rows.sum() * counts[cls]
            got = np.bincount(c.assignment[idx[labels[idx] == cls]], minlength=c.k)
            assert np.abs(got - want).max() < 1
    a = baselines.stratified_indices(labels, c.assignment, 60, seed=3)
    assert np.array_equal(a, baselines.stratified_indices(labels, c.assignment, 60, seed=3))
    assert not np.array_equal(a, baselines.stratified_indices(labels, c.assignment, 60, seed=4))


def test_typical_takes_each_clusters_quota_nearest_its_centroid(pool):
    x, labels, c = pool
    idx = baselines.typical_indices(x, c, 60, seed=0)
    assert len(idx) == 60 == len(np.unique(idx))
    quotas = np.bincount(c.assignment[idx], minlength=c.k)
    assert np.abs(quotas - c.sizes / c.sizes.sum() * 60).max() < 1
    for j in range(c.k):  # brute force: the chosen members are the quota nearest the centroid
        members = np.flatnonzero(c.assignment == j)
        d = np.linalg.norm(x[members] - c.centroids[j], axis=1)
        chosen = np.isin(members, idx)
        if chosen.any() and (~chosen).any():
            assert d[chosen].max() <= d[~chosen].min() + 1e-6


def test_dispatch_and_errors(pool):
    x, labels, c = pool
    assert np.array_equal(baselines.indices("random", 40, 2, labels=labels, clustering=c),
                          baselines.random_indices(len(labels), 40, 2))
    with pytest.raises(JaxselError, match="needs the train embeddings"):
        baselines.indices("typical", 40, 0, labels=labels, clustering=c)
    with pytest.raises(JaxselError, match="cannot choose 601"):
        baselines.stratified_indices(labels, c.assignment, 601, seed=0)
    with pytest.raises(JaxselError, match="unknown baseline"):
        baselines.indices("best", 40, 0, labels=labels, clustering=c)
