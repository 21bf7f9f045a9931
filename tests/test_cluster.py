import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from jaxsel import cluster
from jaxsel.errors import JaxselError


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(6000, n_features=16, centers=24, cluster_std=1.5, random_state=0)


def test_inertia_within_2_percent_of_sklearn(blobs):
    x, _ = blobs
    ours = np.mean([cluster.kmeans(x, 24, seed=s).inertia for s in range(3)])
    theirs = np.mean([KMeans(24, n_init=1, random_state=s).fit(x).inertia_ for s in range(3)])
    assert ours <= 1.02 * theirs


def test_assignment_and_inertia_match_definition(blobs):
    x, _ = blobs
    c = cluster.kmeans(x, 10, seed=1)
    d = ((x[:, None, :] - c.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(c.assignment, d.argmin(1))
    np.testing.assert_allclose(c.inertia, d.min(1).sum(), rtol=1e-4)
    np.testing.assert_allclose(c.centroids, np.stack([x[c.assignment == j].mean(0) for j in range(10)]), atol=1e-2)
    assert c.sizes.sum() == len(x) and (c.sizes > 0).all()


def test_same_seed_same_result(blobs):
    x, _ = blobs
    a, b = cluster.kmeans(x, 12, seed=5), cluster.kmeans(x, 12, seed=5)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_array_equal(a.table, b.table)


def test_stratified_is_label_pure_and_proportional(blobs):
    x, y = blobs
    labels = y % 3
    c = cluster.kmeans(x, 30, labels=labels)
    assert c.k == 30 and c.sizes.sum() == len(x)
    for j in range(30):
        assert len(np.unique(labels[c.members(j)])) == 1
    counts = np.bincount(labels)
    per_label = np.bincount([labels[c.members(j)[0]] for j in range(30)], minlength=3)
    np.testing.assert_array_equal(per_label, cluster.allocate(counts, 30))


def test_allocate():
    np.testing.assert_array_equal(cluster.allocate(np.array([50, 30, 20]), 10), [5, 3, 2])
    np.testing.assert_array_equal(cluster.allocate(np.array([1000, 1, 1]), 10), [8, 1, 1])
    assert cluster.allocate(np.array([7, 5, 3]), 8).sum() == 8


def test_minibatch_as_good_as_sklearn_minibatch(blobs):
    from sklearn.cluster import MiniBatchKMeans
    x, _ = blobs
    ours = np.mean([cluster.kmeans(x, 24, seed=s, method="minibatch").inertia for s in range(3)])
    theirs = np.mean([MiniBatchKMeans(24, n_init=1, random_state=s).fit(x).inertia_ for s in range(3)])
    assert ours <= 1.02 * theirs


def test_empty_cluster_reseeded():
    x = np.concatenate([np.zeros((50, 2)), np.ones((50, 2)) * 10]).astype(np.float32)
    c = np.array([[0, 0], [10, 10], [100, 100]], np.float32)  # the third attracts nothing
    new, _, _ = cluster._update(x, c)
    assert not np.allclose(np.asarray(new)[2], [100, 100])
    assert np.asarray(new)[2].tolist() in ([0.0, 0.0], [10.0, 10.0])


def test_index_table():
    a = np.array([0, 1, 0, 2, 0, 0, 1])
    t = cluster.index_table(a, 4, 3, seed=0)
    assert t.shape == (4, 3)
    assert set(t[0]) <= {0, 2, 4, 5} and len(set(t[0])) == 3
    assert sorted(t[1][:2].tolist()) == [1, 6] and t[1][2] == -1  # in the seeded within-cluster order
    assert t[2].tolist() == [3, -1, -1] and t[3].tolist() == [-1, -1, -1]


def test_save_load_round_trip(tmp_path, blobs):
    x, _ = blobs
    c = cluster.kmeans(x[:500], 8)
    c.save(tmp_path / "c.npz")
    d = cluster.Clustering.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(c.assignment, d.assignment)
    assert d.meta == c.meta and d.inertia == pytest.approx(c.inertia)


def test_corrupt_file(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(JaxselError, match="not a jaxsel clustering"):
        cluster.Clustering.load(tmp_path / "bad.npz")


def test_hand_made_files_that_disagree_with_the_layout_are_refused(tmp_path, blobs):
    """A float assignment raised numpy's TypeError, an array inertia TypeError (a damaged stage file
    crashed the CLI instead of being computed again); a JSON list as meta, a string seed, 1-D or NaN
    centroids loaded and failed later with raw errors; an index table of repeated rows or of other
    clusters' rows, or a within-cluster order not grouped by cluster, loaded and selected rows of
    other clusters than it picked (4 distinct rows in a selection of 30)."""
    import json
    from jaxsel.io import write_npz
    c = cluster.typical_order(cluster.kmeans(blobs[0][:300], 4), blobs[0][:300])
    sub, _ = cluster.restrict(cluster.kmeans(blobs[0][:300], 4), np.arange(0, 300, 3))
    good = dict(assignment=c.assignment, centroids=c.centroids, sizes=c.sizes, table=c.table, inertia=c.inertia,
                meta=json.dumps(c.meta), within=c.within)
    swapped = c.within.copy()
    swapped[[0, -1]] = swapped[[-1, 0]]
    changes = {"float assignment": (dict(assignment=c.assignment.astype(float)), "must be integer arrays"),
               "array inertia": (dict(inertia=np.array([1.0, 2.0])), "not a jaxsel clustering file"),
               "list meta": (dict(meta="[1, 2]"), "meta must be a JSON object"),
               "string seed": (dict(meta=json.dumps({**c.meta, "seed": "abc"})), "seed is an integer"),
               "1-D centroids": (dict(centroids=c.centroids[0]), "centroids must be finite floats"),
               "NaN centroids": (dict(centroids=c.centroids * np.nan), "centroids must be finite floats"),
               "repeated table rows": (dict(table=np.repeat(c.table[:, :1], c.table.shape[1], 1)), "distinct members"),
               "other clusters' rows": (dict(table=c.table[::-1]), "distinct members"),
               "order not grouped": (dict(within=swapped), "grouped by cluster"),
               "order too short": (dict(within=c.within[:-1]), "list each of the 300 rows once"),
               "order 2-D": (dict(within=c.within[None]), "list each of the 300 rows once"),
               "table not the order's head": (dict(within=np.concatenate([
                   np.sort(c.within[:c.sizes[0]]), c.within[c.sizes[0]:]])), "head of the within-cluster order")}
    for name, (change, message) in changes.items():
        write_npz(tmp_path / "bad.npz", **{**good, **change})
        with pytest.raises(JaxselError, match=message):
            cluster.Clustering.load(tmp_path / "bad.npz")
    for made in (c, sub, cluster.kmeans(blobs[0][:300], 5, labels=blobs[1][:300] % 2)):  # no false refusal
        made.save(tmp_path / "ok.npz")
        np.testing.assert_array_equal(cluster.Clustering.load(tmp_path / "ok.npz").table, made.table)


@pytest.mark.parametrize("scale", [1e20, 1e19, 1e-16, 1e-25])
def test_the_partition_does_not_depend_on_the_embeddings_scale(blobs, scale):
    """Squared distances in float32 overflowed (x 1e19: 'k-means left 8 of 10 clusters empty',
    x 1e18: another partition and inertia inf) or fell under k-means++'s 1e-30 floor (x 1e-16:
    another partition). Now the same partition as unscaled, centroids and inertia scaled back."""
    x = blobs[0][:600]
    base, scaled = cluster.kmeans(x, 10), cluster.kmeans(x * np.float32(scale), 10)
    np.testing.assert_array_equal(scaled.assignment, base.assignment)
    np.testing.assert_allclose(scaled.centroids / scale, base.centroids, rtol=1e-4, atol=1e-4)
    assert scaled.inertia / scale**2 == pytest.approx(base.inertia, rel=1e-4)
    # typical_order's distances too (at 1e19 and 1e-25 it fell back to row-index order)
    np.testing.assert_array_equal(cluster.typical_order(scaled, x * np.float32(scale)).within,
                                  cluster.typical_order(base, x).within)


@pytest.mark.parametrize("x,k,message", [
    (np.zeros((5, 3)), 6, "cannot make 6 clusters"),
    (np.zeros((5, 3)), 0, "cannot make 0 clusters"),
    (np.full((5, 3), np.nan), 2, "NaN"),
    (np.full((5, 3), 1e120), 2, "outside float32's range"),  # float64 beyond float32: had said "NaN or inf"
    (np.array([["a", "b"]]), 1, "must be numbers"),
    (np.zeros((0, 3)), 1, "non-empty"),
])
def test_bad_input(x, k, message):
    with pytest.raises(JaxselError, match=message):
        cluster.kmeans(x, k)


@pytest.mark.parametrize("stratified", [False, True])
def test_k_above_distinct_points_is_an_error_and_no_cluster_is_empty(stratified):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 4)).astype(np.float32)
    x = base[np.arange(60) % 6]  # 60 rows, 6 distinct points
    labels = (np.arange(60) % 6) % 2 if stratified else None
    with pytest.raises(JaxselError, match="only 6 distinct"):
        cluster.kmeans(x, 16, labels=labels)
    c = cluster.kmeans(x, 6, labels=labels)
    assert (c.sizes > 0).all() and c.sizes.sum() == 60


@pytest.mark.parametrize("typical", [False, True])
def test_restrict_keeps_the_within_cluster_order_of_the_kept_rows(blobs, typical):
    x = blobs[0]
    c = cluster.kmeans(x, 8, seed=0, table_size=4)
    if typical:
        c = cluster.typical_order(c, x)
    rng = np.random.default_rng(0)
    keep = rng.random(len(x)) < 0.6
    keep[c.assignment == 3] = False  # one cluster loses every row
    rows = np.flatnonzero(keep)
    sub, clusters = cluster.restrict(c, rows)
    assert clusters.tolist() == [j for j in range(8) if j != 3] and sub.k == 7
    assert (np.asarray(c.assignment)[rows] == clusters[sub.assignment]).all()
    order, start = cluster.member_order(c)
    sub_order, sub_start = cluster.member_order(sub)
    for j, orig in enumerate(clusters):
        want = [r for r in order[start[orig]:start[orig + 1]] if keep[r]]  # the old order, excluded rows left out
        assert rows[sub_order[sub_start[j]:sub_start[j + 1]]].tolist() == want
        head = sub.table[j][sub.table[j] >= 0]
        assert head.tolist() == sub_order[sub_start[j]:sub_start[j] + len(head)].tolist()
    with pytest.raises(JaxselError, match="sorted, distinct"):
        cluster.restrict(c, rows[::-1])


def test_rows_of_very_different_scales_are_named_when_clusters_stay_empty():
    """One row at 1e20 among rows near 1 left 15 of 20 clusters empty with 'use a smaller k' alone."""
    x = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)
    x[0] *= 1e20
    with pytest.raises(JaxselError, match=r"clusters empty; use a smaller k, or scale the rows alike \(their norms span"):
        cluster.kmeans(x, 20)
