"""k-means in JAX: k-means++ seeding, Lloyd iterations, a stratified and a mini-batch variant.

``kmeans(x, k)`` returns a :class:`Clustering`: assignments (N,), centroids (K, d), sizes (K,)
and a padded per-cluster index table (K, s) for fixed-size subsampling downstream.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsel import progress as progress_
from jaxsel.config import KMEANS_METHODS
from jaxsel.errors import MAX_INT, JaxselError, check_embeddings, check_labels, is_int
from jaxsel.io import json_text, read_npz, write_npz
from jaxsel.programs import make_room

CHUNK = 4096  # rows per distance block: bounds memory at CHUNK x K floats


@dataclass(frozen=True)
class Clustering:
    """A partition of N rows into K clusters.

    assignment: (N,) int32 cluster id per row; centroids: (K, d) float32; sizes: (K,) int32;
    table: (K, s) int32 row indices per cluster, the first s members in the within-cluster order
    (a seeded sample by default), padded with -1; inertia: sum of squared distances to the
    assigned centroid; meta: how it was made; within: None (the seeded order of
    :func:`member_order`) or (N,) int64 rows grouped by cluster in an explicit within-cluster
    order (:func:`typical_order`).
    """

    assignment: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    table: np.ndarray
    inertia: float
    meta: dict
    within: np.ndarray | None = None

    @property
    def k(self) -> int:
        return len(self.sizes)

    def members(self, cluster: int) -> np.ndarray:
        """All row indices of one cluster, ascending."""
        return np.flatnonzero(self.assignment == cluster)

    def save(self, path: str | Path) -> None:
        """Write arrays and metadata to one ``.npz`` file, atomically."""
        extra = {} if self.within is None else {"within": self.within}
        write_npz(path, assignment=self.assignment, centroids=self.centroids, sizes=self.sizes, table=self.table,
                  inertia=self.inertia, meta=json_text(self.meta, f"clustering {path}"), **extra)

    @classmethod
    def load(cls, path: str | Path) -> "Clustering":
        """The clustering :meth:`save` wrote to ``path``. Raises JaxselError for a file that is not
        one, was changed since (the arrays' sha256), or whose arrays disagree with each other or the
        layout (:func:`_problem`: assignments and sizes, an index table of each cluster's distinct
        members, a within-cluster order grouped by cluster with the table as its head, finite
        centroids, an integer seed)."""
        try:
            z = read_npz(path)
            c = cls(z["assignment"], z["centroids"], z["sizes"], z["table"], float(z["inertia"]),
                    json.loads(str(z["meta"])), z.get("within"))
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise JaxselError(f"{path}: not a jaxsel clustering file ({type(e).__name__}: {str(e)[:120]})")
        problem = _problem(c)
        if problem:
            raise JaxselError(f"{path}: not a usable clustering ({problem}): cluster again")
        return c


def _problem(c: Clustering) -> str | None:
    """What makes ``c``'s arrays disagree with each other or with :class:`Clustering`'s layout
    (a hand-made or damaged file), or None: every check :meth:`Clustering.load` makes."""
    a, sizes, table, centroids = (np.asarray(v) for v in (c.assignment, c.sizes, c.table, c.centroids))
    if not all(v.dtype.kind in "iu" for v in (a, sizes, table)) or a.ndim != 1 or sizes.ndim != 1 or table.ndim != 2:
        return "assignments (N,), sizes (K,) and index table (K, s) must be integer arrays"
    k, n, s = len(sizes), len(a), table.shape[1]
    if centroids.ndim != 2 or len(centroids) != k or centroids.dtype.kind != "f" or not np.isfinite(centroids).all():
        return f"centroids must be finite floats of shape ({k}, d), got {centroids.shape} of {centroids.dtype}"
    if not isinstance(c.meta, dict) or not is_int(c.meta.get("seed", 0)) or not 0 <= c.meta.get("seed", 0) <= MAX_INT:
        return "meta must be a JSON object whose seed is an integer >= 0"
    if len(table) != k or (n and (a.min() < 0 or a.max() >= k)) or not np.array_equal(np.bincount(a, minlength=k), sizes):
        return "assignments, sizes and index table disagree"
    valid, count = table >= 0, np.minimum(sizes, s)
    if (table.size and (table.min() < -1 or table.max() >= n)) or not np.array_equal(valid, np.arange(s) < count[:, None]) \
            or not np.array_equal(a[table[valid]], np.repeat(np.arange(k), count)) or len(np.unique(table[valid])) < count.sum():
        return "the index table must list distinct members of each cluster first, then -1"
    if c.within is not None:
        w = np.asarray(c.within)
        if w.ndim != 1 or w.dtype.kind not in "iu" or not np.array_equal(np.sort(w), np.arange(n)) or np.any(np.diff(a[w]) < 0):
            return f"the within-cluster order must list each of the {n} rows once, grouped by cluster"
        head = (grouped(a, k)[1][:-1, None] + np.arange(s)[None])[valid]
        if not np.array_equal(w[head], table[valid]):
            return "the index table must be the head of the within-cluster order"
    return None


def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
    """Squared distances (n, K) between rows x (n, d) and centroids c (K, d)."""
    return jnp.maximum(jnp.sum(x * x, 1)[:, None] - 2 * x @ c.T + jnp.sum(c * c, 1)[None], 0.0)


def _assign(x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest centroid and its squared distance for every row, in row blocks of CHUNK."""
    def one(xi):
        d = _sq_dists(xi[None], c)[0]
        return jnp.argmin(d).astype(jnp.int32), jnp.min(d)
    return jax.lax.map(one, x, batch_size=min(CHUNK, x.shape[0]))


@partial(jax.jit, static_argnames="k")
def kmeans_pp(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
    """Greedy k-means++ seeding (as scikit-learn): each step draws 2 + log(k) candidates with
    probability proportional to D(x)^2 and keeps the one that lowers the potential most."""
    n, trials = x.shape[0], 2 + int(np.log(k))
    first = jax.random.randint(key, (), 0, n, jnp.int32)
    c0 = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    d0 = jnp.sum((x - x[first]) ** 2, 1)

    def pick(i, carry):
        c, d = carry
        cand = jax.random.categorical(jax.random.fold_in(key, i), jnp.log(jnp.maximum(d, 1e-30)), shape=(trials,))
        d_new = jnp.minimum(d[None], _sq_dists(x, x[cand]).T)  # (trials, n)
        best = jnp.argmin(d_new.sum(1))
        return c.at[i].set(x[cand[best]]), d_new[best]

    return jax.lax.fori_loop(1, k, pick, (c0, d0))[0]


def _update(x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One Lloyd step: new centroids (empty clusters re-seeded at the farthest rows), assignment, inertia."""
    k = c.shape[0]
    a, d = _assign(x, c)
    sums = jax.ops.segment_sum(x, a, k)
    counts = jax.ops.segment_sum(jnp.ones_like(d), a, k)
    new = sums / jnp.maximum(counts, 1)[:, None]
    empty = counts == 0
    far = jax.lax.top_k(d, k)[1]
    new = jnp.where(empty[:, None], x[far[jnp.cumsum(empty) - 1]], new)
    return new, a, d.sum()


@partial(jax.jit, static_argnames=("max_iter",))
def lloyd(x: jax.Array, c: jax.Array, max_iter: int = 100, tol: float = 1e-4) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lloyd iterations until the centroid shift falls under ``tol`` x mean feature variance."""
    thresh = tol * jnp.mean(jnp.var(x, 0))

    def cond(s):
        i, _, shift = s
        return (i < max_iter) & (shift > thresh)

    def body(s):
        i, c, _ = s
        new, _, _ = _update(x, c)
        return i + 1, new, jnp.sum((new - c) ** 2)

    _, c, _ = jax.lax.while_loop(cond, body, (0, c, jnp.inf))
    a, d = _assign(x, c)
    return c, a, d.sum()


@partial(jax.jit, static_argnames=("k", "batch", "steps"))
def minibatch(key: jax.Array, x: jax.Array, k: int, batch: int = 4096, steps: int = 200) -> jax.Array:
    """Mini-batch k-means (Sculley 2010): per-centroid step size 1/count; returns centroids."""
    k_sample, k_seed, k_steps = jax.random.split(key, 3)  # independent draws: sample, seeding, batches
    sample = jax.random.choice(k_sample, x.shape[0], (min(x.shape[0], max(3 * batch, 20 * k)),), replace=False)
    c0 = kmeans_pp(k_seed, x[sample], k)

    def step(carry, i):
        c, counts = carry
        xb = x[jax.random.randint(jax.random.fold_in(k_steps, i), (batch,), 0, x.shape[0], jnp.int32)]
        a, _ = _assign(xb, c)
        bsum = jax.ops.segment_sum(xb, a, k)
        bcnt = jax.ops.segment_sum(jnp.ones(batch), a, k)
        counts = counts + bcnt
        c = c + (bsum - bcnt[:, None] * c) / jnp.maximum(counts, 1)[:, None]
        return (c, counts), None

    return jax.lax.scan(step, (c0, jnp.zeros(k)), jnp.arange(steps))[0][0]


def _check(x: np.ndarray, k: int) -> float:
    """Raise JaxselError for embeddings or a k that k-means cannot take; else the largest |x|."""
    if not is_int(k):
        raise JaxselError(f"k must be an integer number of clusters, got {k!r}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise JaxselError(f"embeddings must be a non-empty (N, d) array, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise JaxselError(f"embeddings must be numbers, got {x.dtype}")
    if not np.isfinite(x).all():
        raise JaxselError("embeddings contain NaN or inf")
    top = float(np.abs(x).max())
    if top > 1e38 or 0 < top < 1e-37:  # float64 input beyond float32's normal numbers
        raise JaxselError(f"embeddings reach {top:.3g}, outside float32's range (jaxsel computes in float32): scale them "
                          f"(e.g. L2-normalise each row)")
    if not 1 <= k <= x.shape[0]:
        raise JaxselError(f"cannot make {k} clusters from {x.shape[0]} examples: use k between 1 and {x.shape[0]} "
                          f"(--k, or [cluster] k in a run config)")
    return top


def grouped(assignment: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(order (N,), bounds (K + 1,)): row indices sorted by cluster (stable); cluster j's rows are
    ``order[bounds[j]:bounds[j + 1]]``."""
    order = np.argsort(assignment, kind="stable")
    return order, np.searchsorted(assignment[order], np.arange(k + 1))


def index_table(assignment: np.ndarray, k: int, size: int, seed: int = 0) -> np.ndarray:
    """(k, size) int32: the first ``size`` members of a seeded random permutation of each cluster
    (in that order), padded with -1. It is the head of :func:`member_order`."""
    rng = np.random.default_rng(seed)
    table = np.full((k, size), -1, np.int32)
    order, bounds = grouped(assignment, k)
    for j in range(k):
        m = rng.permutation(order[bounds[j]:bounds[j + 1]])[:size]
        table[j, :len(m)] = m
    return table


def member_order(clustering: Clustering) -> tuple[np.ndarray, np.ndarray]:
    """The within-cluster order in which a partly taken cluster gives up its rows.

    Returns ``rows`` (N,) int: train row indices grouped by cluster, and ``start`` (K + 1,) int:
    cluster j's rows are ``rows[start[j]:start[j + 1]]``. Each cluster lists its index-table
    sample first (so trained proxies, which see a cluster through its table, see exactly the
    first rows of a partial cluster), then its other members in a seeded random order
    (seed: the clustering's); or the clustering's explicit order (``within``, e.g.
    :func:`typical_order`). Deterministic: the exact-budget trim and the proxies share it."""
    if clustering.within is not None:
        return np.asarray(clustering.within, np.int64), grouped(clustering.assignment, clustering.k)[1].astype(np.int64)
    k, table = clustering.k, np.asarray(clustering.table)
    seed = int(clustering.meta.get("seed", 0))
    rng = np.random.default_rng([seed, 1])
    order, bounds = grouped(clustering.assignment, k)
    parts = []
    for j in range(k):
        head = table[j][table[j] >= 0]
        rest = np.setdiff1d(order[bounds[j]:bounds[j + 1]], head)
        parts.append(np.concatenate([head, rng.permutation(rest)]).astype(np.int64))
    return np.concatenate(parts), bounds.astype(np.int64)


def typical_order(clustering: Clustering, x: np.ndarray) -> Clustering:
    """The same partition with each cluster's members ordered nearest its centroid first (the
    typicality order of TypiClust, Hacohen et al. 2022, with distance to the centroid; ties by
    row index); the index table holds the most typical members. x: (N, d) the clustered rows."""
    x = check_embeddings(x, len(clustering.assignment), "typical order's embeddings")
    if x.shape[1] != clustering.centroids.shape[1]:
        raise JaxselError(f"typical order: embeddings of width {x.shape[1]} for centroids of width "
                          f"{clustering.centroids.shape[1]}: pass the embeddings the clustering was fitted on")
    x, scale = unit_float32(x)  # as kmeans: squared distances in float32 neither overflow nor vanish
    centroids = (np.asarray(clustering.centroids, np.float64) * scale).astype(np.float32)
    order, bounds = grouped(np.asarray(clustering.assignment), clustering.k)
    table = np.full_like(np.asarray(clustering.table), -1)
    parts = []
    for j in range(clustering.k):
        rows = order[bounds[j]:bounds[j + 1]]
        d = np.sum((x[rows] - centroids[j]) ** 2, axis=1)
        rows = rows[np.argsort(d, kind="stable")]
        table[j, :min(len(rows), table.shape[1])] = rows[:table.shape[1]]
        parts.append(rows)
    return dataclasses.replace(clustering, table=table, within=np.concatenate(parts).astype(np.int64),
                               meta=dict(clustering.meta, order="typical"))


def restrict(clustering: Clustering, rows: np.ndarray) -> tuple[Clustering, np.ndarray]:
    """The clustering of the train rows ``rows`` (sorted, distinct ints) alone, and ``clusters``
    (K',) int64: the original id of each of its clusters (clusters left empty are dropped). Row i
    of the result is train row ``rows[i]``; every cluster keeps its within-cluster order
    (:func:`member_order`) with the other rows left out, so a pick takes the same rows as before
    less the excluded ones. Raises JaxselError when ``rows`` is empty or out of range."""
    rows = np.asarray(rows, np.int64)
    n = len(clustering.assignment)
    if not len(rows) or rows.min() < 0 or rows.max() >= n or np.any(np.diff(rows) <= 0):
        raise JaxselError(f"rows must be sorted, distinct indices of the {n} train rows")
    keep = np.zeros(n, bool)
    keep[rows] = True
    local = np.cumsum(keep) - 1  # train row -> its index among the kept rows
    order, _ = member_order(clustering)
    order = order[keep[order]]  # the within-cluster order, grouped by original cluster id
    clusters, assignment = np.unique(np.asarray(clustering.assignment)[rows], return_inverse=True)
    sizes = np.bincount(assignment, minlength=len(clusters)).astype(np.int32)
    within = local[order]
    table = np.full((len(clusters), clustering.table.shape[1]), -1, np.int32)
    for j, start in enumerate(np.concatenate([[0], np.cumsum(sizes)[:-1]])):
        head = within[start:start + min(sizes[j], table.shape[1])]
        table[j, :len(head)] = head
    sub = Clustering(assignment.astype(np.int32), np.asarray(clustering.centroids)[clusters], sizes, table,
                     float("nan"), dict(clustering.meta, restricted_rows=int(len(rows))), within.astype(np.int64))
    return sub, clusters.astype(np.int64)


def _fit(x: np.ndarray, k: int, seed: int, n_init: int, max_iter: int, tol: float, method: str):
    key = jax.random.key(seed)
    xj = jnp.asarray(x, jnp.float32)
    if method == "minibatch":
        c = minibatch(key, xj, k)
        a, d = jax.jit(_assign)(xj, c)
        return c, a, d.sum()
    best = None
    for i in range(n_init):
        c, a, inertia = lloyd(xj, kmeans_pp(jax.random.fold_in(key, i), xj, k), max_iter, tol)
        if best is None or inertia < best[2]:
            best = (c, a, inertia)
    return best


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 1, max_iter: int = 100, tol: float = 1e-4,
           method: str = "lloyd", labels: np.ndarray | None = None, table_size: int = 32,
           progress: bool = False) -> Clustering:
    """Cluster rows of x (N, d) into k clusters.

    method: ``lloyd`` (k-means++ then Lloyd to tolerance, best of ``n_init``) or ``minibatch``
    (for millions of rows: 200 steps of 4,096 rows, one initialisation; ``n_init``, ``max_iter``
    and ``tol`` do not apply and its ``meta`` leaves them out). With ``labels`` (N,), the stratified variant: each label is
    clustered separately with a share of k proportional to its number of distinct embeddings
    (:func:`allocate`), so every cluster is label-pure. Same seed, same result.
    """
    make_room()  # a long process's compiled programs: jaxsel.programs
    x = np.asarray(x)
    x, scale = unit_float32(x, _check(x, k))  # float64 beyond float32's range comes into it
    for name, value, low in (("seed", seed, 0), ("n_init", n_init, 1), ("max_iter", max_iter, 1),
                             ("table_size", table_size, 1)):
        if not is_int(value) or not low <= value <= MAX_INT:
            raise JaxselError(f"kmeans: {name} must be an integer in [{low}, {MAX_INT}], got {value!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 <= tol < float("inf"):
        raise JaxselError(f"kmeans: tol must be a finite number >= 0, got {tol!r}")
    distinct = len(np.unique(x, axis=0))
    if k > distinct:
        raise JaxselError(f"cannot make {k} clusters: the {x.shape[0]} examples hold only {distinct} distinct "
                          f"embeddings (repeated texts embed alike, as do texts the model does not tell apart, such "
                          f"as ones differing only in letter case for an uncased model); use k <= {distinct}, or "
                          f"--dedup where texts repeat")
    if method not in KMEANS_METHODS:
        raise JaxselError(f"unknown k-means method {method!r} ({' or '.join(KMEANS_METHODS)})")
    if labels is None:
        c, a, inertia = _fit(x, k, seed, n_init, max_iter, tol, method)
        assignment, centroids, inertia = np.asarray(a, np.int32), np.asarray(c), float(inertia)
    else:
        labels = check_labels(labels, "labels", x.shape[0])  # class ids, as every other entry point takes them
        classes = np.unique(labels)
        counts = np.array([len(np.unique(x[labels == c], axis=0)) for c in classes])  # distinct points per class
        ks = allocate(counts, k)
        assignment = np.zeros(x.shape[0], np.int32)
        centroids, inertia, offset = [], 0.0, 0
        for cls, kc in progress_.bar(list(zip(classes, ks)), desc="stratified k-means", disable=not progress):
            rows = np.flatnonzero(labels == cls)
            c, a, part = _fit(x[rows], int(kc), seed, n_init, max_iter, tol, method)
            assignment[rows] = np.asarray(a) + offset
            centroids.append(np.asarray(c))
            inertia += float(part)
            offset += int(kc)
        centroids = np.concatenate(centroids)
    centroids, inertia = (np.asarray(centroids, np.float64) / scale).astype(np.float32), inertia / scale**2
    sizes = np.bincount(assignment, minlength=k).astype(np.int32)
    if (sizes == 0).any():  # Lloyd re-seeds empty clusters; this guards what selection relies on
        norms = np.linalg.norm(x, axis=1)
        spread = norms.max() / max(norms[norms > 0].min(initial=np.inf), np.finfo(np.float32).tiny)
        hint = f", or scale the rows alike (their norms span {spread:.1e}x: L2-normalise each row)" if spread > 1e6 else ""
        raise JaxselError(f"k-means left {int((sizes == 0).sum())} of {k} clusters empty; use a smaller k{hint}")
    lloyd_only = dict(n_init=n_init, max_iter=max_iter, tol=tol) if method == "lloyd" else {}
    meta = dict(k=k, seed=seed, **lloyd_only, method=method, stratified=labels is not None, table_size=table_size)
    return Clustering(assignment, centroids, sizes, index_table(assignment, k, table_size, seed), inertia, meta)


def unit_float32(x: np.ndarray, top: float | None = None) -> tuple[np.ndarray, float]:
    """(x * scale as float32, scale): scale is 1.0 (no copy of float32 input) when the largest
    absolute value ``top`` (computed when None) lies in [2^-16, 2^16], else the power of two that
    brings it near 1. k-means's squared distances in float32 overflow (~1e19 and above) or vanish
    under its 1e-30 floor (~1e-16 and below), while the partition of ``x * scale`` is that of ``x``
    and a power of two scales exactly."""
    top = float(np.abs(x).max()) if top is None else top
    if top == 0.0 or 2.0**-16 <= top <= 2.0**16:
        return np.asarray(x, np.float32), 1.0
    scale = 2.0 ** -round(np.log2(top))
    return (x * scale).astype(np.float32), scale


def allocate(counts: np.ndarray, k: int) -> np.ndarray:
    """Split k clusters over classes proportionally to ``counts`` (largest remainder), >= 1 each, <= count.
    Unlike :func:`jaxsel.baselines.apportion` (the same rule without a floor), every class keeps a
    cluster: a class that floors to none takes its one from the classes most above their share."""
    counts = np.asarray(counts)
    if k < len(counts):
        raise JaxselError(f"stratified k-means needs k >= number of classes ({len(counts)}), got {k}: raise k (--k, or "
                          f"[cluster] k in a run config) or drop the smallest classes (--min-class-rows)")
    share = counts / counts.sum() * k
    ks = np.maximum(np.floor(share).astype(int), 1)
    while ks.sum() < k:
        ks[np.argmax(np.where(ks < counts, share - ks, -np.inf))] += 1
    while ks.sum() > k:
        ks[np.argmax(np.where(ks > 1, ks - share, -np.inf))] -= 1
    return np.minimum(ks, counts)
